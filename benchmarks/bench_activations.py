"""Benchmark PCP (§3.4) against ReLU, Sigmoid, Tanh, GELU and SiLU (§4.4's speed claim).

    python benchmarks/bench_activations.py                      # CPU, 2^24 float32, eager+compiled
    python benchmarks/bench_activations.py --modes eager --repeats 5
    python benchmarks/bench_activations.py --device cuda --check --out DIR   # GPU machine

Prints the timing table (median ms of interleaved repeats after warm-up, ratios to the
eager built-in ReLU and Sigmoid), the PCP kernel variants considered (CPU), and with
``--check`` a correctness check of the CUDA paths against float64 CPU. ``--out DIR``
writes activations.csv / kernels.csv / check.json there (atomic writes).
The timing logic lives in :mod:`cfdan.pcp.bench` (the notebook calls it directly).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from cfdan.atomic import write_text  # noqa: E402
from cfdan.pcp import activation as P  # noqa: E402
from cfdan.pcp.bench import ACTIVATIONS, benchmark_activations, benchmark_pcp_kernels  # noqa: E402
from cfdan.pcp.kernels import jiterator_kernels  # noqa: E402


def _gradcheck(fn, inputs) -> bool | str:
    try:
        return bool(torch.autograd.gradcheck(fn, inputs))
    except Exception as exc:
        return f"FAILED: {str(exc).splitlines()[0]}"


def _cuda_cases(n: int) -> dict:
    x = torch.randn(n, device="cuda")
    xr = x.clone().requires_grad_()
    m = P.PCP(learnable=True).cuda()
    return {
        "sigmoid_fwd": lambda: torch.sigmoid(x),
        "sigmoid_fwd_bwd": lambda: torch.sigmoid(xr).sum().backward(),
        "pcp_fwd": lambda: P.pcp(x),
        "pcp_fwd_bwd": lambda: P.pcp(xr).sum().backward(),
        "learnable_fwd": lambda: m(x),
        "learnable_fwd_bwd": lambda: m(xr).sum().backward(),
    }


def _cuda_call_times(sizes=(4096, 1 << 20), reps: int = 200) -> dict:
    """Per-call time (us, mean over reps, synchronised once) of PCP variants on CUDA."""
    out = {}
    for n in sizes:
        cases = _cuda_cases(n)
        for fast in (True, False):
            P.FAST_KERNELS = fast
            for name, f in cases.items():
                if not fast and name.startswith("sigmoid"):
                    continue
                for _ in range(5):
                    f()
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(reps):
                    f()
                torch.cuda.synchronize()
                key = f"n={n} {name}{'' if fast else ' (generic ops)'}"
                out[key] = round((time.perf_counter() - t0) / reps * 1e6, 1)
        P.FAST_KERNELS = True
    return out


def cuda_check(n: int = 1 << 20) -> dict:
    """Compare the CUDA paths (fused jiterator kernel and generic torch.where path) with
    the float64 CPU result: values, input gradients, bfloat16, learnable parameters."""
    if not torch.cuda.is_available():
        raise SystemExit("bench_activations: --check needs a CUDA device")
    gen = torch.Generator().manual_seed(0)
    x64 = torch.randn(n, generator=gen, dtype=torch.float64) * 1.5
    g64 = torch.randn(n, generator=gen, dtype=torch.float64)
    xr = x64.clone().requires_grad_()
    ref = P.pcp(xr)
    (ref_g,) = torch.autograd.grad(ref, xr, g64)
    report: dict = {"jiterator_available": jiterator_kernels() is not None}
    for fast in (True, False):
        P.FAST_KERNELS = fast
        for dtype in (torch.float64, torch.float32, torch.bfloat16):
            xc = x64.to("cuda", dtype).requires_grad_()
            y = P.pcp(xc)
            (gx,) = torch.autograd.grad(y, xc, g64.to("cuda", dtype))
            y = y.detach()
            # compare against the float64 result at the rounded inputs
            xq = xc.detach().double().cpu().requires_grad_()
            yq = P.pcp(xq)
            (gq,) = torch.autograd.grad(yq, xq, g64.to(dtype).double())
            key = f"{'fast' if fast else 'generic'}_{str(dtype).split('.')[-1]}"
            report[key] = {
                "dtype_ok": y.dtype == dtype and gx.dtype == dtype,
                "max_abs_err_value": float((y.double().cpu() - yq).abs().max()),
                "max_abs_err_grad": float((gx.double().cpu() - gq).abs().max()),
                "grad_zero_outside": bool((gx[xc.detach().abs() > 1] == 0).all()),
            }
        xd = x64[:256].to("cuda").requires_grad_()
        report[f"gradcheck_x_{'fast' if fast else 'generic'}"] = _gradcheck(
            lambda t: P.pcp(t), (xd,)
        )
    P.FAST_KERNELS = True
    m = P.PCP(learnable=True).cuda()
    xc = x64.float().cuda()
    m(xc).mul(g64.float().cuda()).sum().backward()
    mc = P.PCP(learnable=True)
    mc(x64.float()).mul(g64.float()).sum().backward()
    report["learnable_grads_cuda"] = [float(getattr(m, k).grad) for k in ("x_L", "P1", "s_L")]
    report["learnable_grads_cpu"] = [float(getattr(mc, k).grad) for k in ("x_L", "P1", "s_L")]
    params = [
        torch.tensor(v, dtype=torch.float64, device="cuda", requires_grad=True)
        for v in (0.19, -0.24, 1.85)
    ]
    xs = x64[:128].to("cuda")
    report["gradcheck_params_cuda"] = _gradcheck(lambda *p: P.pcp(xs, *p), params)
    # learnable on CUDA (truncated-power Function) vs the CPU table path
    spl = [float(getattr(m, k).grad) for k in ("x_L", "P1", "s_L")]
    report["learnable_rel_err"] = max(
        abs(a - b) / max(1.0, abs(b))
        for a, b in zip(spl, report["learnable_grads_cpu"], strict=True)
    )
    report["per_call_us"] = _cuda_call_times()
    report["device"] = torch.cuda.get_device_name()
    report["torch"] = torch.__version__
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--log2-n", default="24", help="tensor length 2^N, or a comma list of N (default 24)"
    )
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--modes", default="eager,compiled")
    ap.add_argument("--activations", default=",".join(ACTIVATIONS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--check", action="store_true", help="CUDA correctness check first")
    ap.add_argument("--no-kernels", action="store_true", help="skip the PCP kernel variants")
    ap.add_argument("--out", type=Path, default=None, help="directory for csv/json output")
    args = ap.parse_args(argv)

    if args.check:
        rep = cuda_check()
        print(json.dumps(rep, indent=1))
        if args.out:
            write_text(args.out / "check.json", json.dumps(rep, indent=1))
    sizes = [int(v) for v in args.log2_n.split(",")]
    frames = []
    for log2_n in sizes:
        df = benchmark_activations(
            n=1 << log2_n,
            repeats=args.repeats,
            warmup=args.warmup,
            modes=tuple(m for m in args.modes.split(",") if m),
            activations=tuple(a for a in args.activations.split(",") if a),
            device=args.device,
            threads=args.threads,
        )
        print(f"# {df.attrs}")
        print(df.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        frames.append(df.assign(n=1 << log2_n))
    if args.out:
        write_text(args.out / "activations.csv", pd.concat(frames).to_csv(index=False))
    if args.device == "cpu" and not args.no_kernels:
        n = 1 << sizes[-1]
        kd = benchmark_pcp_kernels(n=n, repeats=args.repeats, threads=args.threads)
        print(f"# PCP forward kernels considered, {kd.attrs}")
        print(kd.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        if args.out:
            write_text(args.out / "kernels.csv", kd.to_csv(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
