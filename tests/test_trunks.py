"""Pretrained trunks as committed artifacts (:mod:`ablations.trunks`): the committed ones match
their metadata and the records made from them; a tiny spec's trunk is committed, linked,
re-made bitwise, used by later runs, and refused when its file is not its digest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from conftest import cli_args

import ablations.trunks as trunks
from ablations.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _records():
    for path in sorted((ROOT / "results").glob("*/mini/*.json")):
        record = json.loads(path.read_text())
        if record.get("status") == "ok":
            yield path, record


def test_every_committed_trunk_is_its_digest_and_every_record_made_from_it_names_it():
    committed = sorted(trunks.TRUNKS.glob("*.json"))
    assert committed, "no committed trunk"
    digests = {}
    for meta_path in committed:
        meta = json.loads(meta_path.read_text())
        weights = meta_path.with_suffix(".pt")
        assert hashlib.sha256(weights.read_bytes()).hexdigest() == meta["file_sha256"], weights
        state = torch.load(weights, map_location="cpu", weights_only=True)
        assert trunks.weights_sha256(state) == meta["sha256"], weights
        assert meta["trunk"] == meta_path.stem and meta["command"].startswith("python -m ablations pretrain ")
        digests[meta["trunk"]] = meta
    legacy = {h: name for name, meta in digests.items() for h in meta["legacy_hashes"]}
    used = set()
    for path, record in _records():
        pre = record.get("pretrained_backbone") or {}
        if "steps" not in pre:
            continue  # no pretrained trunk (end to end, or a checkpoint file)
        assert pre["hash"] not in legacy, f"{path}: made from {legacy[pre['hash']]} but does not name it"
        if "trunk" in pre:
            assert pre["sha256"] == digests[pre["trunk"]]["sha256"], path
            used.add(pre["trunk"])
    assert used == set(digests)  # no committed trunk that no result uses


def test_a_record_lacking_its_trunks_digest_or_naming_another_is_stale(tmp_path):
    path, record = next((p, r) for p, r in _records() if (r.get("pretrained_backbone") or {}).get("trunk"))
    assert trunks.stale_parts(record, ROOT) == []
    other = dict(record, pretrained_backbone=dict(record["pretrained_backbone"], sha256="0" * 64))
    assert "weights" in trunks.stale_parts(other, ROOT)[0]
    lacking = dict(
        record, pretrained_backbone={k: v for k, v in record["pretrained_backbone"].items() if k != "sha256"}
    )
    assert trunks.stale_parts(lacking, ROOT)  # a record naming a trunk without its digest
    gone = dict(record, pretrained_backbone=dict(record["pretrained_backbone"], trunk="nothing--000000000000"))
    assert "not in" in trunks.stale_parts(gone, ROOT)[0]


@pytest.mark.slow
def test_a_tiny_trunk_is_committed_linked_used_remade_and_refused_when_damaged(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(trunks, "TRUNKS", tmp_path / "trunks")
    args = lambda *a: cli_args(tiny, *a)  # noqa: E731
    assert main(args("run", "tiny", "--jobs", "1", "--seeds", "0", "--variant", "k=3")) == 0
    (first,) = (tiny["results"] / "tiny" / "mini").glob("*.json")
    made_record = json.loads(first.read_text())
    made = made_record["pretrained_backbone"]
    assert "trunk" not in made and len(made["sha256"]) == 64  # from the cache, digest recorded

    assert main(args("pretrain", "tiny")) == 0
    err = capsys.readouterr().err
    assert f"committed (the weights of cache entry {made['hash'][:12]}" in err
    (meta_path,) = (tmp_path / "trunks").glob("*.json")
    meta = json.loads(meta_path.read_text())
    assert meta["sha256"] == made["sha256"] and meta["legacy_hashes"] == [made["hash"]] and meta["loss_curve"]

    assert main(["--results", str(tiny["results"]), "refingerprint"]) == 0
    linked = json.loads(first.read_text())
    assert linked["pretrained_backbone"]["trunk"] == meta["trunk"]
    assert {k: v for k, v in linked.items() if k not in ("pretrained_backbone", "provenance")} == {
        k: v for k, v in json.loads(json.dumps(made_record)).items() if k not in ("pretrained_backbone", "provenance")
    }
    assert not any("pretrain" in key for key in linked["provenance"]["code"])  # the digest stands for its code

    assert main(args("run", "tiny", "--jobs", "1", "--seeds", "1", "--variant", "k=3")) == 0
    assert f"trunk {meta['trunk']} (committed" in capsys.readouterr().err
    (second,) = (tiny["results"] / "tiny" / "mini").glob("k-3--seed1--*.json")
    assert json.loads(second.read_text())["pretrained_backbone"]["sha256"] == meta["sha256"]

    assert main(args("pretrain", "tiny")) == 0  # same machine, same threads: bitwise
    assert "re-made bitwise identical" in capsys.readouterr().err

    weights = meta_path.with_suffix(".pt")
    state = torch.load(weights, weights_only=True)
    state[next(iter(state))] += 1e-3
    torch.save(state, weights)
    assert main(args("run", "tiny", "--jobs", "1", "--seeds", "2", "--variant", "k=3")) == 2
    err = capsys.readouterr().err
    assert str(weights) in err and "weights digest" in err
    assert not list((tiny["results"] / "tiny" / "mini").glob("k-3--seed2--*.json"))


@pytest.mark.parametrize("damage", ["truncate", "metadata"])
def test_a_damaged_committed_trunk_is_a_clear_error(tiny, tmp_path, monkeypatch, capsys, damage):
    monkeypatch.setattr(trunks, "TRUNKS", tmp_path / "trunks")
    assert main(cli_args(tiny, "pretrain", "tiny")) == 0  # pretrained now (no cache entry)
    assert "pretrained now" in capsys.readouterr().err
    (meta_path,) = (tmp_path / "trunks").glob("*.json")
    if damage == "truncate":
        meta_path.with_suffix(".pt").write_bytes(meta_path.with_suffix(".pt").read_bytes()[:100])
    else:
        meta_path.write_text("{not json")
    assert main(cli_args(tiny, "run", "tiny", "--jobs", "1", "--seeds", "0", "--variant", "k=3")) == 2
    err = capsys.readouterr().err
    assert str(meta_path.with_suffix(".pt" if damage == "truncate" else ".json")) in err


@pytest.mark.slow
def test_records_of_an_uncached_trunk_are_linked_only_after_a_bitwise_rerun(tiny, tmp_path, monkeypatch, capsys):
    """Records made from a cache entry that is gone: the trunk pretrained again is tied to them
    only when one of them, re-run from it, gives every metric bit for bit."""
    import shutil

    monkeypatch.setattr(trunks, "TRUNKS", tmp_path / "trunks")
    assert main(cli_args(tiny, "run", "tiny", "--jobs", "1", "--seeds", "0")) == 0
    shutil.rmtree(tiny["cache"])
    capsys.readouterr()
    assert main(cli_args(tiny, "pretrain", "tiny")) == 0
    err = capsys.readouterr().err
    assert (
        "pretrained now" in err and "the trunk of 3 record(s) cached as" in err and "every metric bitwise equal" in err
    )
    assert main(["--results", str(tiny["results"]), "refingerprint"]) == 0
    assert "3 linked to their committed trunk" in capsys.readouterr().err

    # a record whose numbers were not made from these weights is not linked
    trunk = next((tmp_path / "trunks").glob("*.json"))
    trunk.unlink()
    trunk.with_suffix(".pt").unlink()
    (path,) = (tiny["results"] / "tiny" / "mini").glob("k-3--*.json")
    record = json.loads(path.read_text())
    record["pretrained_backbone"] = {k: v for k, v in record["pretrained_backbone"].items() if k != "trunk"}
    record["metrics"]["miou"] = record["metrics"]["miou"] / 2
    for other in (tiny["results"] / "tiny" / "mini").glob("*.json"):
        other.unlink()
    path.write_text(json.dumps(record))
    assert main(cli_args(tiny, "pretrain", "tiny")) == 0
    err = capsys.readouterr().err
    assert "not the trunk of 1 record(s)" in err and "its metrics differ" in err
    assert json.loads(next((tmp_path / "trunks").glob("*.json")).read_text())["legacy_hashes"] == []
