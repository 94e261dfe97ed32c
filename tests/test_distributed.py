"""DDP (cfdan.training.distributed): 2 gloo processes on CPU match one process on the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent

WORKER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    import torch
    from cfdan.training import distributed, loop as T, recipe as R
    from cfdan.training.config import load_config

    def toy():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 16),
                                   torch.nn.GELU(), torch.nn.Linear(16, 4))

    def run(out, info):
        torch.set_num_threads(1)
        cfg = load_config("smoke", {"train.batch_size": 8, "train.epochs": 1,
                                    "train.lr": 1e-2, "train.warmup_epochs": 0.0})
        g = torch.Generator().manual_seed(5)
        images = torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8, generator=g)
        labels = torch.randint(0, 4, (32,), generator=g)
        model = toy()
        fwd = model
        if info.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP
            fwd = DDP(model)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        perm = torch.randperm(32, generator=torch.Generator().manual_seed(1))
        data = R.TrainData(images, labels, "hard", None)
        loader = R.Batches(data, perm, None, lambda u: u.float() / 255 - 0.5,
                           cfg.train.batch_size, 2)
        stats = T.train_one_epoch(model, R.build_criterion(cfg.train), opt, sched, loader,
                                  torch.device("cpu"), 0, cfg.train, info=info, forward=fwd,
                                  last_path=Path(out).parent / "last.pt")
        if info.is_main:
            torch.save({"params": [p.detach() for p in model.parameters()], "stats": stats}, out)

    if __name__ == "__main__":
        info = distributed.init("cpu")
        run(sys.argv[1], info)
        distributed.cleanup(info)
    """
)


def test_two_process_ddp_matches_single_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    single = tmp_path / "single.pt"
    subprocess.run([sys.executable, str(script), str(single)], env=env, check=True, timeout=120)
    ddp = tmp_path / "ddp.pt"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", "29517", str(script), str(ddp)],
        env=env, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = torch.load(single, weights_only=False)
    b = torch.load(ddp, weights_only=False)
    init = [p.detach().clone() for p in _toy_params()]
    moved = sum((pa - p0).abs().sum().item() for pa, p0 in zip(a["params"], init, strict=True))
    assert moved > 0  # training changed the parameters
    for pa, pb in zip(a["params"], b["params"], strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
    assert a["stats"]["train_loss"] == pytest.approx(b["stats"]["train_loss"], rel=1e-5)
    # each rank saw half of every global batch: 2 steps x 8 images in total, as in one process
    assert a["stats"]["train_images"] == b["stats"]["train_images"] == 16


def _toy_params():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 16),
                            torch.nn.GELU(), torch.nn.Linear(16, 4))
    return list(m.parameters())


def test_shard_splits_a_global_batch():
    from cfdan.training.distributed import DistInfo, shard

    idx = torch.arange(8)
    parts = [shard(idx, DistInfo(rank=r, world_size=2)) for r in range(2)]
    assert sorted(torch.cat(parts).tolist()) == list(range(8))
    assert torch.equal(shard(idx, DistInfo()), idx)


def test_torchrun_smoke_training_writes_one_record(tmp_path):
    pytest.importorskip("cfdan.data.pipeline", reason="needs the data package")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "CFDAN_RESULTS_DIR": str(tmp_path / "results"),
           "CFDAN_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
           "CFDAN_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", "29518", "-m", "cfdan", "train", "--profile", "smoke", "--quiet",
         "--set", "train.epochs=1"],
        env=env, capture_output=True, text=True, timeout=240, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = (tmp_path / "results" / "smoke").glob("*.json")
    import json

    rec = json.loads(path.read_text())
    assert rec["hardware"]["world_size"] == 2
    assert rec["history"][0]["train_images"] == rec["data"]["sizes"]["train"] // 32 * 32
    assert proc.stdout.count("epoch 1/1") == 1  # only rank 0 logs
