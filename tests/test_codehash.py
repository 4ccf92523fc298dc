"""Code fingerprints by definition (:mod:`ablations.codehash`): what a fingerprint follows, what
marks a result stale and what does not, on a small tree and on the committed results."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from ablations.codehash import Project
from ablations.schema import stale_sources

ROOT = Path(__file__).resolve().parent.parent


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


TREE = {
    "seg_core/__init__.py": "",
    "seg_core/models/__init__.py": "from seg_core.models.heads import Head  # a re-export\n",
    "seg_core/models/heads.py": '''
        """Heads."""
        from torch import nn

        WIDTH = 4

        class Head(nn.Module):
            """A head."""
            def forward(self, x):
                return _scale(x) * WIDTH

        def _scale(x):
            return x

        class Unused(nn.Module):
            pass
        ''',
    "seg_core/engine.py": """
        import seg_core.models.heads as heads
        from seg_core import models

        def train(model):
            return heads._scale(model) + models.Head

        def evaluate(model):
            return model
        """,
    "ablations/__init__.py": "",
    "ablations/protocol.py": """
        import seg_core.engine as engine

        def run(model):
            return engine.train(model)
        """,
}


@pytest.fixture
def tree(tmp_path):
    _write(tmp_path, TREE)
    return tmp_path


def test_the_closure_follows_imports_aliases_and_re_exports_and_nothing_else(tree):
    fp = Project(tree).fingerprint([("ablations.protocol", "run")])
    assert set(fp) == {
        "ablations/protocol.py::run",
        "seg_core/engine.py::train",
        "seg_core/models/heads.py::_scale",
        "seg_core/models/heads.py::Head",  # through seg_core.models' re-export
        "seg_core/models/heads.py::WIDTH",
    }


def _edit(tree: Path, rel: str, old: str, new: str) -> None:
    path = tree / rel
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_code_edits_mark_stale_docstrings_comments_and_unreached_code_do_not(tree):
    project = Project(tree)
    fp = project.fingerprint([("ablations.protocol", "run")])
    _edit(tree, "seg_core/models/heads.py", '"""A head."""', '"""A head, reworded."""  # and a comment')
    _edit(tree, "seg_core/models/heads.py", "class Unused(nn.Module):\n    pass", "class Unused(nn.Module):\n    x = 1")
    _edit(tree, "seg_core/engine.py", "return model\n", "return model.eval()\n")  # evaluate: not reached
    assert project.changed(fp) == []
    _edit(tree, "seg_core/models/heads.py", "WIDTH = 4", "WIDTH = 5")
    assert project.changed(fp) == ["seg_core/models/heads.py::WIDTH"]
    assert stale_sources(fp, tree) == ["seg_core/models/heads.py::WIDTH"]


def test_a_definition_moved_to_another_module_unchanged_is_not_stale(tree):
    project = Project(tree)
    fp = project.fingerprint([("ablations.protocol", "run")])
    _edit(tree, "seg_core/models/heads.py", "def _scale(x):\n    return x\n", "from seg_core.ops import _scale\n")
    _write(tree, {"seg_core/ops.py": "def _scale(x):\n    return x\n"})
    assert project.changed(fp) == []
    assert "seg_core/ops.py::_scale" in project.fingerprint([("ablations.protocol", "run")])


def test_per_file_fingerprints_of_older_records_are_still_checked(tree):
    from ablations.schema import source_hash

    old = {"seg_core/engine.py": source_hash(tree / "seg_core/engine.py")}
    assert stale_sources(old, tree) == []
    _edit(tree, "seg_core/engine.py", "return model\n", "return model.eval()\n")
    assert stale_sources(old, tree) == ["seg_core/engine.py"]


# ---------------------------------------------------------------- the committed results
def _records() -> dict[str, list[dict]]:
    by_spec: dict[str, list[dict]] = {}
    for path in sorted((ROOT / "results").glob("*/mini/*.json")):
        record = json.loads(path.read_text())
        if record.get("status") == "ok":
            by_spec.setdefault(path.parts[-3], []).append(record["provenance"]["code"])
    return by_spec


@pytest.fixture(scope="module")
def code_copy(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    for package in ("seg_core", "ablations"):
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__", "specs"))
    return root


def _stale_specs(root: Path) -> set[str]:
    return {spec for spec, codes in _records().items() if any(stale_sources(code, root) for code in codes)}


@pytest.mark.slow
def test_editing_a_gcn_head_marks_only_the_tables_that_use_it_stale(code_copy):
    assert _stale_specs(code_copy) == set()  # the committed results are current
    path = code_copy / "seg_core/models/gcn.py"
    original = path.read_text()
    try:
        marker = "class GlobalConvolution(nn.Module):"
        assert marker in original
        path.write_text(original.replace(marker, marker + "\n    planted = 1", 1))
        stale = _stale_specs(code_copy)
        assert "gcn-k" in stale and "gcn-vs-conv" in stale
        assert not {s for s in stale if s.startswith(("deeplab", "icnet", "gscnn"))}, stale
    finally:
        path.write_text(original)


def test_a_planted_change_in_the_training_loop_marks_every_table_stale(code_copy):
    path = code_copy / "seg_core/engine.py"
    original = path.read_text()
    try:
        head, rest = original.split("\ndef train(", 1)
        signature, body = rest.split(":\n", 1)  # the def line ends at the first ":\n"
        path.write_text(f"{head}\ndef train({signature}:\n    assert True\n{body}")
        assert _stale_specs(code_copy) == set(_records())
    finally:
        path.write_text(original)


def test_a_runs_recorded_fingerprint_is_its_configs_and_refingerprint_upgrades_older_records(tiny, capsys):
    from conftest import cli_args

    from ablations.cli import main
    from ablations.execute import config_fingerprint
    from ablations.schema import source_hash

    assert main(cli_args(tiny, "run", "tiny", "--jobs", "1", "--seeds", "0", "--variant", "k=3")) == 0
    (path,) = (tiny["results"] / "tiny" / "mini").glob("*.json")
    record = json.loads(path.read_text())
    assert record["provenance"]["code"] == config_fingerprint(record["config"])
    # a record as the per-file format wrote it: upgraded; one whose file changed: left stale
    files = sorted({key.split("::")[0] for key in record["provenance"]["code"]})
    old = dict(record, provenance=dict(record["provenance"], code={f: source_hash(ROOT / f) for f in files}))
    path.write_text(json.dumps(old))
    stale = path.with_name("k-3--seed1--00000000.json")
    stale.write_text(json.dumps(dict(old, provenance=dict(old["provenance"], code={files[0]: "0" * 16}))))
    assert main(["--results", str(tiny["results"]), "refingerprint"]) == 0
    err = capsys.readouterr().err
    assert (
        "1 record(s) given per-definition fingerprints, 0 linked to their committed trunk; 1 stale" in err
        and f"{stale}: stale ({files[0]}" in err
    )
    assert json.loads(path.read_text()) == record
    assert json.loads(stale.read_text())["provenance"]["code"] == {files[0]: "0" * 16}
