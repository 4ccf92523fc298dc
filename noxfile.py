"""Sessions: tests, lint, report, benchmarks, ablations, and ``ablation-<id>`` per spec file.

Every session installs the project into its own uv-made virtualenv, reused between calls
(``reuse_venv``), so torch is installed once per session, from uv's cache after the first time.
Extra arguments go to the underlying command: ``nox -s ablation-gcn-k -- --seeds 0 1 2 3 4``.
"""

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
    _install(session, "dev")
    session.run("pytest", *(session.posargs or ["-q", "tests"]))


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.5")
    session.run("ruff", "check", "seg_core", "ablations", "report", "benchmarks", "tests", "noxfile.py")


@nox.session
def report(session: nox.Session) -> None:
    """Regenerate report/ from results/ and the specs."""
    _install(session)
    session.run("python", "-m", "report")


@nox.session
def benchmarks(session: nox.Session) -> None:
    """Head latency benchmarks (pytest-benchmark); JSON under results/benchmarks/. ICNet: benchmark-icnet."""
    _install(session, "dev")
    out = ROOT / "results" / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    session.run("pytest", "benchmarks/test_gcn_heads.py", "--benchmark-only", f"--benchmark-json={out / 'heads.json'}",
                *session.posargs)


@nox.session(name="benchmark-icnet")
def benchmark_icnet(session: nox.Session) -> None:
    """ICNet timing tables at 1024x2048 (CPU; CUDA too where available), then the report page.

    Writes results/benchmarks/icnet-cpu.json (and icnet-cuda.json), each through a temp file so
    a failed or interrupted run leaves the previous results intact.
    """
    _install(session, "dev")
    out = ROOT / "results" / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    has_cuda = "yes" in session.run("python", "-c", "import torch; print('yes' if torch.cuda.is_available() else 'no')",
                                    silent=True)
    for device in ["cpu"] + (["cuda"] if has_cuda else []):
        final = out / f"icnet-{device}.json"
        tmp = out / f".icnet-{device}.json.tmp"
        session.run("pytest", "benchmarks/test_icnet_timing.py", "--benchmark-only", "-k", device,
                    f"--benchmark-json={tmp}", *session.posargs)
        tmp.replace(final)
    session.run("python", "-m", "report")


@nox.session
def ablations(session: nox.Session) -> None:
    """Run every spec at the mini scale, then regenerate the report."""
    _install(session)
    for spec in SPECS:
        session.run("python", "-m", "ablations", "run", spec.stem, *session.posargs)
    session.run("python", "-m", "report")


def _ablation_session(spec_id: str) -> None:
    @nox.session(name=f"ablation-{spec_id}")
    def run(session: nox.Session) -> None:
        _install(session)
        session.run("python", "-m", "ablations", "run", spec_id, *session.posargs)
        session.run("python", "-m", "report")

    run.__doc__ = f"Run the {spec_id} sweep (resuming), then regenerate the report."


for _spec in SPECS:
    _ablation_session(_spec.stem)
