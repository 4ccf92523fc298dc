"""Engine: deterministic training, poly schedule, losses, non-finite loss detection."""

import pytest
import torch

from ablations.execute import execute_run
from ablations.schema import load_spec
from ablations.sweep import expand
from seg_core.data.synthetic import SyntheticShapes
from seg_core.engine import TrainConfig, TrainingDiverged, train
from seg_core.losses import CompositeLoss
from seg_core.registry import MODELS, ConfigError


def test_same_spec_and_seed_twice_gives_identical_metrics(tiny, tmp_path):
    spec = load_spec(tiny["spec"])
    run = [r for r in expand(spec, "mini", results_dir=tiny["results"]) if r["variant"] == "k=3"][0]
    first = execute_run(dict(run, path=str(tmp_path / "a.json")), cache_dir=str(tiny["cache"]))
    second = execute_run(dict(run, path=str(tmp_path / "b.json")), cache_dir=str(tiny["cache"]))
    assert first["metrics"] == second["metrics"]
    assert first["training"] == second["training"]
    other = execute_run(
        dict(run, config=dict(run["config"], seed=7), path=str(tmp_path / "c.json")), cache_dir=str(tiny["cache"])
    )
    assert other["training"]["loss_curve"] != first["training"]["loss_curve"]


def test_poly_schedule_is_the_closed_form():
    data = SyntheticShapes(split="train", num_images=8, config=None)
    model = MODELS.build(
        "single_head",
        num_classes=5,
        backbone="mini_resnet",
        head="pointwise",
        backbone_options={"stem_width": 8, "widths": [8, 8, 8]},
    )
    stats = train(
        model, data, TrainConfig(steps=100, batch_size=2, lr=0.01, poly_power=0.9, freeze_backbone=True), seed=0
    )
    assert len(stats["loss_curve"]) == 51
    for step, _, lr in stats["loss_curve"]:
        assert lr == pytest.approx(0.01 * (1 - step / 100) ** 0.9, rel=1e-5)


def test_cross_entropy_ignores_255():
    loss = CompositeLoss.from_config({"seg": {"type": "cross_entropy"}})
    logits = torch.randn(1, 3, 2, 2)
    label = torch.tensor([[[0, 255], [255, 255]]])
    total, parts = loss({"out": logits}, {"label": label})
    expected = torch.nn.functional.cross_entropy(logits[:, :, 0, 0], torch.tensor([0]))
    torch.testing.assert_close(total, expected)
    assert set(parts) == {"seg"}


def test_composite_loss_weights_and_unknown_type():
    loss = CompositeLoss.from_config(
        {"a": {"type": "cross_entropy", "weight": 0.4}, "b": {"type": "cross_entropy", "weight": 1.0, "output": "aux"}}
    )
    logits = torch.randn(1, 2, 2, 2)
    label = torch.zeros(1, 2, 2, dtype=torch.long)
    total, parts = loss({"out": logits, "aux": logits}, {"label": label})
    assert total.item() == pytest.approx(1.4 * parts["a"], rel=1e-5)
    with pytest.raises(ConfigError, match="unknown loss") as info:
        CompositeLoss.from_config({"a": {"type": "dice"}})
    assert info.value.key == "a.type"


def test_divergence_is_reported():
    data = SyntheticShapes(split="train", num_images=8, config=None)
    model = MODELS.build(
        "single_head",
        num_classes=5,
        backbone="mini_resnet",
        head="gcn",
        k=3,
        backbone_options={"stem_width": 8, "widths": [8, 8, 8]},
    )
    with pytest.raises(TrainingDiverged, match="lower train.lr") as info:
        train(model, data, TrainConfig(steps=5, batch_size=4, lr=1e12, momentum=0.0, freeze_backbone=True), seed=0)
    assert 0 < info.value.step < 5 and info.value.lr == pytest.approx(1e12 * (1 - info.value.step / 5) ** 0.9)


def test_frozen_random_backbones_do_not_share_cached_features(tiny, tmp_path):
    """Without pretraining, each seed's frozen backbone is different: no feature sharing."""
    from ablations import protocol

    spec = load_spec(tiny["spec"])
    run = [r for r in expand(spec, "mini", results_dir=tiny["results"]) if r["variant"] == "k=3"][0]
    config = {k: v for k, v in run["config"].items() if k != "pretrain"}
    seed0 = dict(run, config=dict(config, seed=0), path=str(tmp_path / "s0.json"))
    seed1 = dict(run, config=dict(config, seed=1), path=str(tmp_path / "s1.json"))
    protocol._FEATURES.clear()
    alone = execute_run(seed1, cache_dir=str(tiny["cache"]))["metrics"]
    protocol._FEATURES.clear()
    execute_run(seed0, cache_dir=str(tiny["cache"]))
    after_other_seed = execute_run(seed1, cache_dir=str(tiny["cache"]))["metrics"]
    assert after_other_seed == alone


def test_counting_macs_restores_every_modules_mode():
    """ICNet's trunk MACs are counted through a wrapper; the model must come back as it was,
    module by module (an eval-mode model stays in eval mode; a frozen backbone in eval mode
    inside a training model stays so)."""
    from seg_core.complexity import model_complexity

    model = MODELS.build("icnet", num_classes=3, backbone_options={"width": 0.125}).eval()
    model_complexity(model, (1, 3, 64, 64))
    assert not any(m.training for m in model.modules())
    model.train()
    model.backbone.eval()
    model_complexity(model, (1, 3, 64, 64))
    assert model.training and model.cff_24.training and not any(m.training for m in model.backbone.modules())


def test_in_run_pretraining_leaves_the_runs_thread_count(tiny, tmp_path):
    from ablations.execute import RUN_THREADS

    spec = load_spec(tiny["spec"])
    run = [r for r in expand(spec, "mini", results_dir=tiny["results"]) if r["variant"] == "k=3"][0]
    record = execute_run(dict(run, path=str(tmp_path / "a.json")), cache_dir=str(tmp_path / "fresh-cache"))
    assert torch.get_num_threads() == RUN_THREADS == record["provenance"]["threads"]
