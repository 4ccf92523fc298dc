"""Pretrained mini trunks as committed artifacts, like a library's published weights.

The mini scale pretrains each backbone once (:func:`ablations.protocol.pretrain_backbone`). A
trunk that is committed lives in ``results/trunks/`` as ``<backbone>--<recipe hash>.pt`` (the
backbone's state dict) beside a ``.json`` that says what it is:

* ``recipe``: what determines it (backbone and options, pretraining data, schedule, thread
  count; :func:`ablations.execute.pretrain_config` without its code), and ``recipe_hash``;
* ``sha256``: a digest of its weights (names, dtypes, shapes and bytes of every tensor, in name
  order: :func:`weights_sha256`; the ``.pt`` file's own bytes are written deterministically too,
  ``file_sha256``);
* ``code``: the pretraining code's fingerprint when it was made; ``final_loss``, ``steps``,
  ``train_s`` and the ``loss_curve``; ``machine`` (torch, CPU capability, threads) and the
  ``command`` that re-makes it (``python -m ablations pretrain <spec>``);
* ``legacy_hashes``: the pretraining-cache keys the same weights were stored under before trunks
  were committed (the ``pretrained_backbone.hash`` of older records).

A run whose trunk is committed loads it, checks its digest, and records ``pretrained_backbone =
{trunk, sha256, ...}``; its code fingerprint then leaves the pretraining code out: the run is
stale when the committed trunk's digest is no longer the one it records (:func:`trunk_changed`),
not when pretraining code moves. A run whose trunk is not committed pretrains it into the cache
as before, and ``python -m ablations pretrain <spec>`` commits it.

This module's metadata helpers need no torch (the report checks trunks too); the weights helpers
import it when called.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

from ablations.schema import config_hash, stale_sources

TRUNKS = Path(__file__).resolve().parent.parent / "results" / "trunks"


class TrunkError(RuntimeError):
    """A committed trunk that cannot be used: unreadable, or its weights are not its digest."""


def recipe(pre_cfg: dict) -> dict:
    """What determines a trunk: the pretraining config without the code that made it."""
    return {k: v for k, v in pre_cfg.items() if k != "code"}


def trunk_name(pre_cfg: dict) -> str:
    return f"{pre_cfg['backbone']}--{config_hash(recipe(pre_cfg))[:12]}"


def _directory(directory: Path | None) -> Path:
    return TRUNKS if directory is None else Path(directory)  # read at call time (tests point it elsewhere)


def trunk_paths(pre_cfg: dict, directory: Path | None = None) -> tuple[Path, Path]:
    directory = _directory(directory)
    name = trunk_name(pre_cfg)
    return directory / f"{name}.pt", directory / f"{name}.json"


def read_meta(name: str, directory: Path | None = None) -> dict | None:
    """A committed trunk's metadata by name (None when there is none); no torch."""
    path = _directory(directory) / f"{name}.json"
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TrunkError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str):
        raise TrunkError(f"{path}: not a trunk's metadata (no 'sha256')")
    return meta


def trunk_changed(pretrained: dict | None, directory: Path | None = None) -> str | None:
    """Why a record's trunk is no longer the committed one (None when it is, or when the record
    names no committed trunk); no torch."""
    if not pretrained or not pretrained.get("trunk"):
        return None
    try:
        meta = read_meta(pretrained["trunk"], directory)
    except TrunkError as e:
        return str(e)
    if meta is None:
        return f"trunk {pretrained['trunk']}: not in {_directory(directory)}"
    if meta["sha256"] != pretrained.get("sha256"):
        return f"trunk {pretrained['trunk']}: weights {meta['sha256'][:12]}, the record's {str(pretrained.get('sha256'))[:12]}"
    return None


def stale_parts(record: dict, root: Path, directory: Path | None = None) -> list[str]:
    """What in a result changed since it was made: the definitions of its code fingerprint that
    exist nowhere now (:func:`ablations.schema.stale_sources`) and its trunk, when the committed
    one is no longer the one it used; no torch."""
    changed = stale_sources(record.get("provenance", {}).get("code", {}), root)
    trunk = trunk_changed(record.get("pretrained_backbone"), directory)
    return changed + ([trunk] if trunk else [])


# ----------------------------------------------------------------------- weights (torch)
def weights_sha256(state: dict) -> str:
    """sha256 of a state dict's tensors: name, dtype, shape and bytes of each, in name order."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(-1).view(dtype=torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def serialized(state: dict) -> bytes:
    """The state dict as ``torch.save`` writes it to a buffer (no file name inside: the bytes
    depend on the weights only)."""
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def load_committed(pre_cfg: dict, directory: Path | None = None) -> tuple[dict, dict] | None:
    """(state dict, metadata) of the committed trunk of ``pre_cfg``, its digest checked; None
    when none is committed. Raises :class:`TrunkError` when the file is not the digest."""
    import torch

    weights, _ = trunk_paths(pre_cfg, directory)
    meta = read_meta(trunk_name(pre_cfg), directory)
    if meta is None:
        return None
    if meta.get("recipe") != recipe(pre_cfg):
        raise TrunkError(f"{weights.with_suffix('.json')}: its recipe is not this run's (a renamed file?)")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (missing, truncated, not a state dict: all unusable)
        raise TrunkError(f"{weights}: unreadable ({type(e).__name__}: {e})") from None
    found = weights_sha256(state)
    if found != meta["sha256"]:
        raise TrunkError(
            f"{weights}: weights digest {found[:12]}, its metadata says {meta['sha256'][:12]}; "
            f"re-make it with: {meta.get('command', 'python -m ablations pretrain <spec>')}"
        )
    return state, meta


def write_trunk(pre_cfg: dict, state: dict, stats: dict[str, Any], extra: dict, directory: Path | None = None) -> dict:
    """Commit a trunk: its weights and metadata, each written whole (temp file, then rename)."""
    from ablations.store import write_atomic

    weights, meta_path = trunk_paths(pre_cfg, directory)
    directory = weights.parent
    data = serialized(state)
    meta = {
        "trunk": trunk_name(pre_cfg),
        "recipe": recipe(pre_cfg),
        "recipe_hash": config_hash(recipe(pre_cfg)),
        "sha256": weights_sha256(state),
        "file_sha256": hashlib.sha256(data).hexdigest(),
        "code": pre_cfg.get("code", {}),
        "final_loss": stats["final_loss"],
        "steps": stats["steps"],
        "train_s": stats.get("train_s"),
        "loss_curve": stats.get("loss_curve", []),
        **extra,
    }
    directory.mkdir(parents=True, exist_ok=True)
    tmp = weights.with_name(f".{weights.name}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(weights)
    except BaseException:  # a full disk, Ctrl-C: no partial file left behind
        tmp.unlink(missing_ok=True)
        raise
    write_atomic(meta_path, json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return meta
