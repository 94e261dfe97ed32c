"""The CPU kernels of PCP(x) (eqs. (10)-(12)): in place per L2-sized block, split over threads.

:mod:`cfdan.pcp.kernels` dispatches here (``kernel="blocked"``, and ``"auto"`` on the CPU)
for a C2 table in truncated-power form (:class:`cfdan.pcp.spline.Spline`): the forward pass,
``grad * dPCP/dx`` and the table's gradient. Each block runs a handful of in-place elementwise
ops on buffers that stay in L2; long tensors are cut into block-aligned parts that Python
threads run side by side (the ops release the GIL).
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

from cfdan.pcp.spline import Spline

__all__ = ["CPU_BLOCK", "PARALLEL_MIN", "coef_grad", "forward", "grad_x", "work_dtype"]

#: CPU block length. The eager CPU kernels run ~15 in-place elementwise ops per block;
#: 2^15 float32 keeps a block and its scratch buffers in L2 cache (only x, y and grad
#: touch memory) and stays at ATen's grain size, so each small op runs single-threaded
#: (per-op thread-pool wake-ups cost more than they save at this size).
CPU_BLOCK = 1 << 15

#: Tensors with at least this many elements are split into contiguous parts that are
#: processed in parallel by Python threads (the ops release the GIL), one per torch thread.
PARALLEL_MIN = 1 << 18


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16 / bfloat16 inputs are evaluated in float32 and rounded once at the end."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


_pool: ThreadPoolExecutor | None = None
_pool_key: tuple[int, int] | None = None


def _executor(workers: int) -> ThreadPoolExecutor:
    """A thread pool with ``workers`` threads, recreated after fork or a thread-count change."""
    global _pool, _pool_key
    key = (os.getpid(), workers)
    if _pool is None or _pool_key != key:
        _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cfdan-pcp")
        _pool_key = key
    return _pool


def _run_parts(n: int, part: Callable[[int, int], None]) -> None:
    """Call ``part(start, end)`` on block-aligned contiguous ranges covering [0, n)."""
    workers = torch.get_num_threads()
    if workers <= 1 or n < max(PARALLEL_MIN, 2 * CPU_BLOCK):
        part(0, n)
        return
    blocks = math.ceil(n / CPU_BLOCK)
    workers = min(workers, blocks)
    edges = [min(n, (blocks * i // workers) * CPU_BLOCK) for i in range(workers + 1)]
    futures = [_executor(workers).submit(part, s, e) for s, e in itertools.pairwise(edges)]
    for f in futures:
        f.result()


def _split(t: Tensor, size: int) -> tuple[Tensor, ...]:
    """Blocks of a flat tensor (no split call for a single block: it costs microseconds)."""
    return (t,) if t.numel() <= size else t.split(size)


@functools.lru_cache(maxsize=256)
def _scalars(dtype: torch.dtype, *values: float) -> tuple[Tensor, ...]:
    """0-dim CPU tensors for the in-place ops (cheaper per op than Python floats; cached,
    never written to)."""
    return tuple(torch.tensor(v, dtype=dtype) for v in values)


@functools.lru_cache(maxsize=64)
def _const_blocks(sp: Spline, dtype: torch.dtype, size: int) -> dict[str, Tensor]:
    """Constant tensors of length ``size`` for the fused ``addcmul`` steps of the CPU
    kernels (a full constant operand keeps addcmul on its vectorised path). Views of one
    cached CPU_BLOCK-long set, so the memory is bounded."""
    if size != CPU_BLOCK:
        return {k: v[:size] for k, v in _const_blocks(sp, dtype, CPU_BLOCK).items()}
    beta = math.copysign(abs(sp.alpha) ** (1 / 3), sp.alpha)
    gamma = math.copysign(abs(sp.k3) ** (1 / 3), sp.k3)
    values = {
        "a2": sp.a2,
        "b": sp.b,
        "c": sp.c,
        "beta": beta,  # cbrt(alpha): the left correction is (beta min(t, 0))^3
        "gamma": gamma,  # cbrt(k3): the right correction is (gamma max(t - x_L, 0))^3
        "gamma_xl": -gamma * sp.x_L,
        "a2_3": 3 * sp.a2,
        "b_2": 2 * sp.b,
        "alpha_3": 3 * sp.alpha,
        "k3_3": 3 * sp.k3,
    }
    return {k: torch.full((size,), v, dtype=dtype) for k, v in values.items()}


def _setup(x: Tensor, sp: Spline
           ) -> tuple[Tensor, Tensor, torch.dtype, bool, int, dict[str, Tensor]]:
    """What :func:`forward` and :func:`grad_x` share: ``x`` flat, the output, the work dtype,
    whether it is wider than ``x``'s, the block size and the constant blocks."""
    xf = x.detach().contiguous().reshape(-1)
    wdt = work_dtype(x.dtype)
    size = max(1, min(xf.numel(), CPU_BLOCK))
    return xf, torch.empty_like(xf), wdt, wdt != x.dtype, size, _const_blocks(sp, wdt, size)


def forward(x: Tensor, sp: Spline) -> Tensor:
    """Eq. (10) on CPU, in place per L2-sized block, in truncated-power form.

    ``alpha u^3 + k3 w^3`` with disjoint supports (u = min(t, 0), w = max(t - x_L, 0)) is
    ``(beta u + gamma w)^3`` with ``beta, gamma`` the cube roots of ``alpha, k3``: one cube
    for both corrections. 10 elementwise ops per block (Horner steps fused with
    ``addcmul``); :mod:`cfdan.pcp.bench` times the alternatives (torch.where selection +
    Horner, 0/1 indicator blending).
    """
    xf, out, wdt, low, size, K = _setup(x, sp)
    n = xf.numel()
    d = float(sp.d)
    positive_gamma = sp.k3 > 0

    def part(start: int, end: int) -> None:
        t0, u0, w0, v0, y0 = (torch.empty(size, dtype=wdt) for _ in range(5))
        for xc, oc in zip(_split(xf[start:end], size), _split(out[start:end], size), strict=True):
            m = xc.numel()
            full = m == size
            t, u, w, v = (t0, u0, w0, v0) if full else (t0[:m], u0[:m], w0[:m], v0[:m])
            k = K if full else {key: val[:m] for key, val in K.items()}
            if low:
                t.copy_(xc).clamp_(-1.0, 1.0)
                y = y0[:m]
            else:
                torch.clamp(xc, -1.0, 1.0, out=t)  # PCP(-1) = P1, PCP(1) = 1: eq. (10)
                y = oc
            torch.addcmul(k["b"], t, k["a2"], out=y)  # q(t) = ((a2 t + b) t + c) t + d
            torch.addcmul(k["c"], y, t, out=y)
            y.mul_(t)
            if d != 0.0:
                y.add_(d)
            torch.addcmul(k["gamma_xl"], t, k["gamma"], out=w)  # gamma (t - x_L)
            if positive_gamma:
                w.clamp_min_(0.0)  # gamma max(t - x_L, 0)
            else:
                w.clamp_max_(0.0)
            torch.clamp_max(t, 0.0, out=u)  # min(t, 0)
            torch.addcmul(w, u, k["beta"], out=w)  # S = beta u + gamma w
            torch.mul(w, w, out=v)
            y.addcmul_(v, w)  # + S^3 = alpha u^3 + k3 w^3
            if low:
                oc.copy_(y)

    _run_parts(n, part)
    return out.reshape(x.shape)


def grad_x(x: Tensor, grad: Tensor, sp: Spline) -> Tensor:
    """``grad * dPCP/dx`` on CPU: ``q'(t) + 3 alpha min(t,0)^2 + 3 k3 max(t-x_L,0)^2``
    inside [-1, 1], exactly 0 outside (13 elementwise ops per block)."""
    xf, out, wdt, low, size, K = _setup(x, sp)
    gf = grad.detach().contiguous().reshape(-1)
    n = xf.numel()
    (xl,) = _scalars(wdt, sp.x_L)

    def part(start: int, end: int) -> None:
        t0, u0, w0, d0 = (torch.empty(size, dtype=wdt) for _ in range(4))
        views = (_split(f[start:end], size) for f in (xf, gf, out))
        for xc, gc, oc in zip(*views, strict=True):
            m = xc.numel()
            full = m == size
            t, u, w, dd = (t0, u0, w0, d0) if full else (t0[:m], u0[:m], w0[:m], d0[:m])
            k = K if full else {key: val[:m] for key, val in K.items()}
            if low:
                t.copy_(xc).clamp_(-1.0, 1.0)
            else:
                torch.clamp(xc, -1.0, 1.0, out=t)
            torch.addcmul(k["b_2"], t, k["a2_3"], out=dd)  # q'(t) = (3 a2 t + 2 b) t + c
            torch.addcmul(k["c"], dd, t, out=dd)
            torch.clamp_max(t, 0.0, out=u)  # + 3 alpha min(t, 0)^2
            torch.mul(u, k["alpha_3"], out=w)
            dd.addcmul_(w, u)
            torch.sub(t, xl, out=u).clamp_min_(0.0)  # + 3 k3 max(t - x_L, 0)^2
            torch.mul(u, k["k3_3"], out=w)
            dd.addcmul_(w, u)
            torch.eq(t, xc, out=u)  # 1 inside [-1, 1], 0 where the constant extension holds
            dd.mul_(u)
            if low:
                oc.copy_(dd.mul_(gc))
            else:
                torch.mul(dd, gc, out=oc)

    _run_parts(n, part)
    return out.reshape(x.shape)


def coef_grad(x: Tensor, grad: Tensor, x_L: float) -> Tensor:
    """d loss / d table (3, 4) on CPU, L2-blocked: per piece, sums of ``grad * t^p``.

    Same quantity as the generic path of :mod:`cfdan.pcp.kernels` (block sums in the work
    dtype, accumulated in float64); returns float64.
    """
    xf = x.detach().contiguous().reshape(-1)
    gf = grad.detach().contiguous().reshape(-1)
    wdt = work_dtype(x.dtype)
    split = min(0.0, x_L)  # piece 1 is t < 0 unless piece 3 (t >= x_L) claims it
    partial: dict[int, list[float]] = {}

    def part(start: int, end: int) -> None:
        size = max(1, min(end - start, CPU_BLOCK))
        bufs = [torch.empty(size, dtype=wdt) for _ in range(7)]
        acc = [0.0] * 12
        views = (_split(f[start:end], size) for f in (xf, gf))
        for xc, gc in zip(*views, strict=True):
            m = xc.numel()
            t, t2, t3, lo, hi, g, w = (b if m == size else b[:m] for b in bufs)
            t.copy_(xc).clamp_(-1.0, 1.0)
            g.copy_(gc)
            torch.lt(t, split, out=lo)
            torch.ge(t, x_L, out=hi)
            torch.mul(t, t, out=t2)
            torch.mul(t2, t, out=t3)
            torch.mul(g, hi, out=w)  # piece 3
            hi.copy_(w)
            torch.mul(g, lo, out=w)  # piece 1
            lo.copy_(w)
            g.sub_(lo).sub_(hi)  # piece 2
            for i, wi in enumerate((lo, g, hi)):
                sums = (torch.dot(wi, t3), torch.dot(wi, t2), torch.dot(wi, t), wi.sum())
                for j, s in enumerate(sums):
                    acc[4 * i + j] += float(s)
        partial[start] = acc

    _run_parts(xf.numel(), part)
    total = [sum(p[i] for p in partial.values()) for i in range(12)]
    return torch.tensor(total, dtype=torch.float64).reshape(3, 4)
