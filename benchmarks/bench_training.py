"""Training and inference speed of a profile's model vs its bare trunk.

    python benchmarks/bench_training.py [--profile cpu] [--steps 8] [--threads 2] [--amp both]

Prints, for the profile's CF-DAN and for its ResNet trunk alone (global average pool + linear
head): training images/s (augmentation on the device + forward + backward + AdamW step), the
share of step time spent in augmentation, and inference latency per image (batch 1) and
throughput (batch 256). Inputs are random uint8 images of the profile's size, so no dataset is
needed; the numbers measure speed only.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn


class BareTrunk(nn.Module):
    """The model's trunk with a global-average-pool + linear head (no attention, no ILM)."""

    def __init__(self, trunk: nn.Module, channels: int, num_classes: int) -> None:
        super().__init__()
        self.trunk, self.head = trunk, nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x).mean((2, 3)))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_train(model, images, labels, aug, steps, batch, device, amp, channels_last):
    from cfdan.training.evaluate import autocast

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    t_aug, t_step = [], []
    for i in range(steps + 2):  # two warm-up steps
        idx = torch.randint(0, len(images), (batch,), device=images.device)
        _sync(device)
        t0 = time.perf_counter()
        x = aug(images[idx])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        _sync(device)
        t1 = time.perf_counter()
        with autocast(device, amp):
            out = model(x)
        loss = F.cross_entropy(out.float(), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        t2 = time.perf_counter()
        if i >= 2:
            t_aug.append(t1 - t0)
            t_step.append(t2 - t1)
    total = sum(t_aug) + sum(t_step)
    return {"images_per_s": steps * batch / total, "augment_share": sum(t_aug) / total}


@torch.no_grad()
def bench_infer(model, images, aug, device, amp, channels_last, reps=20):
    from cfdan.training.evaluate import autocast

    model.eval()
    lat = []
    for i in range(reps + 3):
        _sync(device)
        t0 = time.perf_counter()
        x = aug(images[i % len(images)][None])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            model(x)
        _sync(device)
        if i >= 3:
            lat.append(time.perf_counter() - t0)
    big = images[:256]
    _sync(device)
    t0 = time.perf_counter()
    x = aug(big)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(device, amp):
        model(x)
    _sync(device)
    return {"latency_ms": 1e3 * statistics.median(lat),
            "infer_images_per_s": len(big) / (time.perf_counter() - t0)}


def main(argv=None) -> None:
    from cfdan.training.config import load_config
    from cfdan.training.loop import build_model, compile_model, make_augment, resolve_device

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--channels", type=int, default=1, help="channels of the stored images")
    ap.add_argument("--amp", choices=("profile", "on", "off", "both"), default="profile")
    ap.add_argument("--compile", choices=("off", "on", "both"), default="off",
                    help="also time torch.compile'd models (compilation is in the warm-up)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.profile, args.overrides)
    device = resolve_device(cfg.train.device)
    size, batch, k = cfg.data.image_size, cfg.train.batch_size, 8
    torch.manual_seed(0)
    images = torch.randint(0, 256, (max(256, batch), args.channels, size, size),
                           dtype=torch.uint8).to(device)
    labels = torch.randint(0, k, (len(images),)).to(device)
    aug_train = make_augment(size, train=True, seed=0)
    aug_eval = make_augment(size, train=False, seed=0)
    amps = {"profile": [cfg.train.amp], "on": [True], "off": [False], "both": [False, True]}
    print(f"profile {args.profile}: {size} px, batch {batch}, device {device}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    cl = cfg.train.channels_last
    compiles = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    speed: dict[tuple[bool, bool, str], float] = {}
    for amp in amps[args.amp]:
        amp = amp and device.type in ("cpu", "cuda")
        for comp in compiles:
            full = build_model(cfg, k, size).to(device)
            bare = BareTrunk(full.trunk, full.trunk.out_channels, k).to(device)
            for name, model in (("cf-dan", full), ("bare trunk", bare)):
                if cl:
                    model = model.to(memory_format=torch.channels_last)
                params = sum(p.numel() for p in model.parameters())
                run = compile_model(model) if comp else model
                tr = bench_train(run, images, labels, aug_train, args.steps, batch, device, amp,
                                 cl)
                inf = bench_infer(run, images, aug_eval, device, amp, cl)
                speed[amp, comp, name] = tr["images_per_s"]
                print(f"  bf16={str(amp):<5} compile={str(comp):<5} {name:<10} "
                      f"{params / 1e6:6.2f} M params | train {tr['images_per_s']:8.1f} img/s "
                      f"(augment {100 * tr['augment_share']:4.1f} % of step time) | inference "
                      f"{inf['latency_ms']:7.2f} ms/image at batch 1, "
                      f"{inf['infer_images_per_s']:8.1f} img/s at batch 256")
    for (amp, comp, name), ips in speed.items():
        if name == "cf-dan":
            print(f"  ratio cf-dan / bare trunk, training img/s, bf16={amp} compile={comp}: "
                  f"{ips / speed[amp, comp, 'bare trunk']:.2f}")

if __name__ == "__main__":
    main()
