"""Generated from the model registry: every registered model with an ``example`` (tiny options)
is tested here, so a new family is covered without new test code. Family test files hold only
what is specific to a paper (closed-form counts, structures, the paper's options)."""

import pytest
import torch
from torch import nn

from seg_core import MODELS
from seg_core.contract import SegmentationModel

NAMES = [name for name in MODELS if MODELS.example(name) is not None]
SIZES = [(32, 32), (37, 45)]  # tiny, and odd on both sides


def _build(name: str, **extra):
    torch.manual_seed(0)
    return MODELS.build(name, num_classes=3, **{**MODELS.example(name), **extra})


def test_every_registered_model_has_an_example():
    missing = [name for name in MODELS if MODELS.example(name) is None]
    assert not missing, f"register these models with example={{...}} (tiny options): {missing}"


def _extra(model, size) -> dict:
    """The extra inputs a model names, made from a raw uint8 batch by their INPUTS makers."""
    from seg_core.registry import INPUTS, ConfigError

    raw = {"image": torch.randint(0, 256, (2, 3, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))}
    try:
        return {n: INPUTS.get(n)(raw) for n in getattr(model, "extra_inputs", ())}
    except ConfigError as e:  # an input whose maker needs an optional extra that is not installed
        if "pip install" not in e.message:
            raise
        pytest.skip(e.message)


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES, ids=["tiny", "odd"])
@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_and_the_output_contract(name, size):
    model = _build(name).train()
    assert isinstance(model, SegmentationModel)
    x = torch.randn(2, 3, *size)
    extra = _extra(model, size)
    out = model(x, **extra)
    assert out["out"].shape == (2, 3, *size)
    # class scores (main and auxiliary outputs) have the classes' channels; maps such as a boundary one
    assert all(v.shape[0] == 2 and v.shape[1] in (1, 3) and v.dtype == torch.float32 for v in out.values())
    sum(v.float().mean() for v in out.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without a gradient: {missing[:5]}"
    model.eval()
    with torch.no_grad():
        decoded = model.decode(model.extract(x), size, **extra)
        torch.testing.assert_close(decoded["out"], model(x, **extra)["out"])


@pytest.mark.parametrize("name", NAMES)
def test_builds_on_meta_and_counts_every_part(name):
    from seg_core.complexity import model_complexity

    with torch.device("meta"):
        model = _build(name)
    assert all(p.is_meta for p in model.parameters())
    counts = model_complexity(model, (1, 3, 64, 64))
    parts = counts["parts"].values()
    assert sum(p["macs"] for p in parts) == counts["total"]["macs"] > 0
    assert sum(p["params"] for p in parts) == counts["total"]["params"]


def shared_modules(model: nn.Module) -> list[tuple[str, str]]:
    """Modules with parameters reachable under two names, aliases declared by the model aside."""
    aliases = tuple(getattr(model, "aliases", ()))
    seen: dict[int, str] = {}
    shared = []
    for path, module in model.named_modules(remove_duplicate=False):
        if id(module) in seen and list(module.parameters(recurse=False)):
            if not (path.split(".")[0] in aliases or seen[id(module)].split(".")[0] in aliases):
                shared.append((seen[id(module)], path))
        seen.setdefault(id(module), path)
    return shared


@pytest.mark.parametrize("name", NAMES)
def test_no_shared_submodules_beyond_declared_aliases(name):
    assert not shared_modules(_build(name))


def test_a_shared_submodule_would_be_caught():
    """The check above is not vacuous: ``[block] * 2`` (one module twice) is found, and an
    undeclared alias of a backbone module too."""
    block = nn.Conv2d(2, 2, 1)
    assert shared_modules(nn.Sequential(block, block)) == [("0", "1")]
    model = _build("icnet")
    model.aliases = ()
    assert shared_modules(model)
