"""Timing of PCP against common activations (§4.4: "does not involve exponentiation,
improving the model's operational speed compared with ... Sigmoid and Tanh").

All activations are timed in the same run, interleaved round-robin (so slow drifts of a
shared machine hit all of them alike), after warm-up; the median of the repeats is
reported with ratios to the eager built-in ReLU and Sigmoid. On glibc, the timings first fix
malloc's thresholds (:func:`steady_allocator`): otherwise glibc's moving mmap threshold hands
some calls recycled memory and others fresh pages to fault in, and a 4 MB tensor's page faults
cost more than most activations (forward+backward was timed faster than forward alone). ``benchmarks/bench_activations.py``
is the command-line front end; the notebook calls :func:`benchmark_activations` directly.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
import platform
import statistics
import time
from collections.abc import Callable, Iterator

import pandas as pd
import torch
import torch.nn.functional as F

from cfdan.pcp import activation as _pcp
from cfdan.pcp import kernels as pcp_kernels

__all__ = ["ACTIVATIONS", "benchmark_activations", "benchmark_pcp_kernels"]

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "PCP": _pcp.pcp,
    "PCP-learnable": _pcp.PCP(learnable=True),  # moved to the benchmark's device
    "ReLU": torch.relu,
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
    "GELU": F.gelu,
    "SiLU": F.silu,
}


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20  # glibc's largest on 64-bit: buffers below it come from the heap
TRIM_THRESHOLD = 1 << 30


def steady_allocator() -> str:
    """Make buffer reuse the same for every timed call (glibc only; a no-op elsewhere): freed
    buffers below :data:`MMAP_THRESHOLD` stay in the heap (no return to the OS below
    :data:`TRIM_THRESHOLD`), so no call pays page faults that another does not. Applies to the
    rest of the process. Returns a description for the table's attrs."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "default (not glibc)"
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and \
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return (f"glibc mallopt: mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold "
            f"{TRIM_THRESHOLD >> 20} MiB" if ok else "default (mallopt refused)")


@contextlib.contextmanager
def _timing_setup(threads: int | None) -> Iterator[str]:
    """Steady allocator (yields its description) and ``threads`` torch threads, restored after."""
    allocator = steady_allocator()
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield allocator
    finally:
        torch.set_num_threads(before)


def _timed(fn: Callable[[], object], sync: Callable[[], None]) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return (time.perf_counter() - t0) * 1e3


def _make_steps(f, x: torch.Tensor, g: torch.Tensor):
    xr = x.detach().clone().requires_grad_()

    def fwd():
        with torch.no_grad():
            f(x)

    def fwd_bwd():
        f(xr).backward(g)
        xr.grad = None

    return fwd, fwd_bwd


def benchmark_activations(
    n: int = 1 << 24,
    repeats: int = 7,
    warmup: int = 2,
    modes: tuple[str, ...] = ("eager", "compiled"),
    activations: tuple[str, ...] | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    threads: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Forward and forward+backward time (ms, median) per activation and mode.

    ``x ~ N(0, 1)`` of length ``n``; the backward receives a fixed random gradient.
    ``modes``: "eager" and/or "compiled" (``torch.compile`` of the activation; a failure
    is caught and reported in ``status``, its times are NaN). Columns: activation, mode,
    fwd_ms, fwd_bwd_ms, fwd_vs_relu, fwd_bwd_vs_relu, fwd_vs_sigmoid, fwd_bwd_vs_sigmoid,
    compile_s, status. ``df.attrs`` records n, dtype, device, threads, repeats, torch and the
    allocator setting (:func:`steady_allocator`).
    """
    names = tuple(activations or ACTIVATIONS)
    unknown = set(names) - set(ACTIVATIONS)
    if unknown:
        raise ValueError(f"benchmark_activations: unknown activations {sorted(unknown)}")
    with _timing_setup(threads) as allocator:
        df = _benchmark_activations(n, repeats, warmup, modes, names, device, dtype, seed)
    df.attrs["allocator"] = allocator
    return df


def _benchmark_activations(n, repeats, warmup, modes, names, device, dtype, seed) -> pd.DataFrame:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)
    g = torch.randn(n, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)

    rows: dict[tuple[str, str], dict] = {}
    steps = {}
    for mode in modes:
        for name in names:
            row = {"activation": name, "mode": mode, "compile_s": math.nan, "status": "ok"}
            rows[(name, mode)] = row
            f = ACTIVATIONS[name]
            if isinstance(f, torch.nn.Module):
                f = _pcp.PCP(**f.effective_parameters(), learnable=True).to(device)
            try:
                if mode == "compiled":
                    torch._dynamo.reset()
                    f = torch.compile(f, dynamic=False)
                elif mode != "eager":
                    raise ValueError(f"unknown mode {mode!r}")
                fwd, fwd_bwd = _make_steps(f, x, g)
                t0 = time.perf_counter()
                for _ in range(max(1, warmup)):
                    fwd()
                    fwd_bwd()
                sync()
                if mode == "compiled":
                    row["compile_s"] = time.perf_counter() - t0
                steps[(name, mode)] = (fwd, fwd_bwd)
            except Exception as exc:  # report, do not abort the whole table
                row["status"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"

    times: dict[tuple[str, str], tuple[list[float], list[float]]] = {k: ([], []) for k in steps}
    for _ in range(repeats):
        for key, (fwd, fwd_bwd) in steps.items():
            times[key][0].append(_timed(fwd, sync))
            times[key][1].append(_timed(fwd_bwd, sync))

    for key, row in rows.items():
        tf, tb = times.get(key, ([], []))
        row["fwd_ms"] = statistics.median(tf) if tf else math.nan
        row["fwd_bwd_ms"] = statistics.median(tb) if tb else math.nan
    df = pd.DataFrame(list(rows.values()))
    # ratios to the built-in op as shipped (eager) when it was timed, else same mode
    for ref in ("ReLU", "Sigmoid"):
        for col in ("fwd", "fwd_bwd"):
            base = df[df.activation == ref].set_index("mode")[f"{col}_ms"]
            if "eager" in base.index:
                denom = pd.Series(base["eager"], index=df.index)
            else:
                denom = df["mode"].map(base)
            df[f"{col}_vs_{ref.lower()}"] = df[f"{col}_ms"] / denom
    cols = [
        "activation",
        "mode",
        "fwd_ms",
        "fwd_bwd_ms",
        "fwd_vs_relu",
        "fwd_bwd_vs_relu",
        "fwd_vs_sigmoid",
        "fwd_bwd_vs_sigmoid",
        "compile_s",
        "status",
    ]
    df = df[cols]
    df.attrs.update(
        n=n,
        dtype=str(dtype),
        device=device,
        threads=torch.get_num_threads(),
        repeats=repeats,
        torch=torch.__version__,
    )
    return df


# --------------------------------------------------------------------------- kernels
def _indicator_blend_forward(x: torch.Tensor, coef: torch.Tensor, x_L: float) -> torch.Tensor:
    """Alternative CPU kernel: per-piece coefficients blended with 0/1 float indicators
    (``a = a2 + (a1 - a2) [t<0] + (a3 - a2) [t>=x_L]``), then eq. (12), L2-blocked."""
    k = coef.tolist()
    xf = x.contiguous().reshape(-1)
    out = torch.empty_like(xf)
    size = min(xf.numel(), pcp_kernels.CPU_BLOCK)
    t0, lo0, hi0 = (torch.empty(size, dtype=x.dtype) for _ in range(3))
    for xc, y in zip(xf.split(size), out.split(size), strict=True):
        m = xc.numel()
        t, lo, hi = t0[:m], lo0[:m], hi0[:m]
        torch.clamp(xc, -1.0, 1.0, out=t)
        torch.lt(t, 0.0, out=lo)
        torch.ge(t, x_L, out=hi)
        y.zero_()
        for j in range(4):
            if j:
                y.mul_(t)
            base = k[1][j]
            if k[0][j] != base:
                y.add_(lo, alpha=k[0][j] - base)
            if k[2][j] != base:
                y.add_(hi, alpha=k[2][j] - base)
            if base:
                y.add_(base)
    return out.reshape(x.shape)


def benchmark_pcp_kernels(
    n: int = 1 << 24, repeats: int = 7, threads: int | None = None, seed: int = 0
) -> pd.DataFrame:
    """Forward time (ms, median, interleaved) of the PCP kernel variants considered, with
    ReLU and Sigmoid for scale. ``chosen`` is what :func:`cfdan.pcp.pcp` runs on CPU."""
    with _timing_setup(threads) as allocator:
        df = _benchmark_pcp_kernels(n, repeats, seed)
    df.attrs["allocator"] = allocator
    return df


def _benchmark_pcp_kernels(n: int, repeats: int, seed: int) -> pd.DataFrame:
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed))
    coef = _pcp.coefficients(_pcp.DEFAULT_X_L, _pcp.DEFAULT_P1, _pcp.DEFAULT_S_L)
    xl = torch.tensor(_pcp.DEFAULT_X_L, dtype=torch.float64)

    def kernel(name: pcp_kernels.Kernel) -> Callable[[], torch.Tensor]:
        return lambda: pcp_kernels.pcp_table(x, coef, xl, kernel=name)

    variants = {
        "chosen: L2 blocks, truncated-power form": kernel("blocked"),
        "torch.where selection + Horner (whole tensor)": kernel("generic"),
        "0/1 indicator blend + Horner (L2 blocks)": lambda: _indicator_blend_forward(
            x, coef, _pcp.DEFAULT_X_L
        ),
        "ReLU": lambda: torch.relu(x),
        "Sigmoid": lambda: torch.sigmoid(x),
    }
    for f in variants.values():
        f()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for k, f in variants.items():
            times[k].append(_timed(f, lambda: None))
    df = pd.DataFrame(
        {"kernel": list(times), "fwd_ms": [statistics.median(v) for v in times.values()]}
    )
    df["vs_relu"] = df.fwd_ms / float(df.loc[df.kernel == "ReLU", "fwd_ms"].iloc[0])
    df.attrs.update(n=n, threads=torch.get_num_threads(), repeats=repeats)
    return df
