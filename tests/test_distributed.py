"""Data-parallel training and evaluation (seg_core.distributed): two gloo processes on CPU give what
one process gives on the same global batch (to the float summation order), and the evaluation's
confusion matrices are summed exactly across ranks."""

import pytest
import torch
import torch.multiprocessing as mp

from seg_core.data.synthetic import ShapesConfig, SyntheticShapes
from seg_core.distributed import Shard
from seg_core.engine import TrainConfig, evaluate, seed_everything, train
from seg_core.registry import MODELS

CONFIG = ShapesConfig(size=32, radius_min=3.0, radius_max=12.0)


def _model():
    seed_everything(0, 1)
    return MODELS.build(
        "single_head",
        num_classes=5,
        backbone="mini_resnet",
        head="gcn",
        k=3,
        backbone_options={"stem_width": 8, "widths": [8, 8, 16]},
    )


def _run(shard: Shard | None) -> dict:
    data = SyntheticShapes(split="train", num_images=32, config=CONFIG)
    val = SyntheticShapes(split="val", num_images=10, config=CONFIG)  # 10 images: uneven over 2 ranks
    model = _model()
    stats = train(model, data, TrainConfig(steps=20, batch_size=8, lr=0.05, freeze_backbone=True), seed=0, shard=shard)
    metrics = evaluate(model, val, num_classes=5, band_width=0.5, shard=shard)
    return {
        "metrics": metrics,
        "curve": stats["loss_curve"],
        "head": [p.detach().clone() for p in model.head.parameters()],
    }


def _worker(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    result = _run(Shard(rank, world))
    if rank == 0:
        torch.save(result, out)
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_on_the_same_global_batch(tmp_path):
    single = _run(None)
    out = tmp_path / "rank0.pt"
    mp.spawn(_worker, args=(2, f"file://{tmp_path / 'rendezvous'}", str(out)), nprocs=2, join=True)
    double = torch.load(out, weights_only=False)
    for a, b in zip(single["head"], double["head"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # the same trained weights, to summation order
    assert abs(single["metrics"]["miou"] - double["metrics"]["miou"]) < 1e-3
    # evaluation sums the same pixels: the two runs' confusion matrices cover all 10 images
    assert sum(single["metrics"]["per_class_iou"][i] is None for i in range(5)) == sum(
        double["metrics"]["per_class_iou"][i] is None for i in range(5)
    )
    assert [s for s, _, _ in single["curve"]] == [s for s, _, _ in double["curve"]]


def test_a_global_batch_must_split_over_the_ranks():
    from seg_core.registry import ConfigError

    data = SyntheticShapes(split="train", num_images=8, config=CONFIG)
    with pytest.raises(ConfigError, match="does not split over 3") as info:
        train(_model(), data, TrainConfig(steps=1, batch_size=8, freeze_backbone=True), seed=0, shard=Shard(0, 3))
    assert info.value.key == "batch_size"


def test_shards_take_every_world_th_sample_with_its_global_slot():
    from seg_core.engine import train_batches

    data = SyntheticShapes(split="train", num_images=12, config=CONFIG)
    config = TrainConfig(steps=3, batch_size=4)
    whole = [idx.tolist() for idx, _ in train_batches(data, config, seed=1)]
    parts = [[idx.tolist() for idx, _ in train_batches(data, config, seed=1, shard=Shard(r, 2))] for r in (0, 1)]
    for step, batch in enumerate(whole):
        assert parts[0][step] == batch[0::2] and parts[1][step] == batch[1::2]
