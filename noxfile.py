"""Sessions: tests, lint, report, benchmarks, ablations, and ``ablation-<id>`` per spec file.

Timing specs (``kind = "timing"``) get ``ablation-<id>`` sessions too: they run that spec's
benchmarks. Every session installs the project into its own uv-made virtualenv, reused between calls
(``reuse_venv``), so torch is installed once per session, from uv's cache after the first time.
Extra arguments go to the underlying command: ``nox -s ablation-gcn-k -- --seeds 0 1 2 3 4``.
"""

import tomllib
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "tests"]

ROOT = Path(__file__).parent
SPECS = sorted((ROOT / "ablations" / "specs").glob("*.toml"))


def _install(session: nox.Session, *extras: str) -> None:
    target = f".[{','.join(extras)}]" if extras else "."
    session.install("-e", target)


@nox.session
def tests(session: nox.Session) -> None:
    """The unit and end-to-end test suite (CPU; CUDA cases skip without a GPU)."""
    _install(session, "dev", "crf", "paper", "gscnn")
    session.run("pytest", *(session.posargs or ["-q", "tests"]))


LINTED = ("seg_core", "ablations", "report", "benchmarks", "tests", "noxfile.py")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: the lint rules and the formatting (``ruff format --check``)."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", *LINTED)
    session.run("ruff", "format", "--check", *LINTED)


# The report reads files only and never imports torch: its session installs the project without
# its model dependencies (seconds, where the other sessions fetch torch the first time).
NOT_FOR_THE_REPORT = ("torch", "torchvision", "tqdm")


@nox.session
def report(session: nox.Session) -> None:
    """Regenerate report/ from results/ and the specs (no torch installed)."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    session.install(*(d for d in deps if not d.startswith(NOT_FOR_THE_REPORT)))
    session.install("--no-deps", "-e", ".")
    session.run("python", "-m", "report")


@nox.session
def benchmarks(session: nox.Session) -> None:
    """Every timing spec (at the papers' resolutions) and the head latencies, CPU and CUDA where
    available; then the report. Writes results/benchmarks/timing-<device>.json, heads.json (the GCN
    heads at the paper's configuration) and crf.json (the dense CRF per image)."""
    _install(session, "dev", "crf")
    for device in _devices(session):
        _timing(session, device)
    out = ROOT / "results" / "benchmarks"
    for suite, name in (("benchmarks/test_gcn_heads.py", "heads.json"), ("benchmarks/test_crf.py", "crf.json")):
        session.run("pytest", suite, "--benchmark-only", f"--benchmark-json={out / name}", *session.posargs)
    session.run("python", "-m", "report")


def _devices(session: nox.Session) -> list[str]:
    has_cuda = "yes" in session.run(
        "python", "-c", "import torch; print('yes' if torch.cuda.is_available() else 'no')", silent=True
    )
    return ["cpu"] + (["cuda"] if has_cuda else [])


def _timing(session: nox.Session, device: str, spec_id: str | None = None) -> None:
    """Measure the timing specs (or one) on ``device``; merge into results/benchmarks/timing-<device>.json
    through a temp file, so a failed or interrupted run leaves the previous measurements intact."""
    out = ROOT / "results" / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".timing-{device}.new.json"
    env = {"SEGBENCH_TIMING_SPEC": spec_id} if spec_id else {}
    session.run(
        "pytest",
        "benchmarks/test_timing.py",
        "--benchmark-only",
        "-k",
        device,
        f"--benchmark-json={tmp}",
        *session.posargs,
        env=env,
    )
    session.run("python", "-m", "benchmarks.merge", str(tmp), str(out / f"timing-{device}.json"))
    tmp.unlink()


@nox.session
def ablations(session: nox.Session) -> None:
    """Run every ablation spec at the mini scale, then regenerate the report (timing: nox -s benchmarks)."""
    _install(session, "crf")
    for spec in SPECS:
        if _kind(spec) == "ablation":
            session.run("python", "-m", "ablations", "run", spec.stem, *session.posargs)
    session.run("python", "-m", "report")


def _kind(path: Path) -> str:
    return tomllib.loads(path.read_text()).get("kind", "ablation")


def _ablation_session(spec: Path) -> None:
    spec_id, timing = spec.stem, _kind(spec) == "timing"

    @nox.session(name=f"ablation-{spec_id}")
    def run(session: nox.Session) -> None:
        if timing:
            _install(session, "dev", "crf")
            for device in _devices(session):
                _timing(session, device, spec_id)
        else:
            _install(session, "crf")  # DeepLab's dense CRF: built from source once, then uv's cache
            session.run("python", "-m", "ablations", "run", spec_id, *session.posargs)
        session.run("python", "-m", "report")

    run.__doc__ = (
        f"Measure the {spec_id} timing table, then regenerate the report."
        if timing
        else f"Run the {spec_id} sweep (resuming), then regenerate the report."
    )


for _spec in SPECS:
    _ablation_session(_spec)
