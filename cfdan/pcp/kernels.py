"""How PCP(x) of eqs. (10)-(12) is computed: kernels, autograd Functions, dispatch.

:mod:`cfdan.pcp` holds the mathematics and the module; this file holds the ways of
evaluating one fixed function fast on each device. A C2 table (eq. 9) is the spline in
*truncated-power form* (:class:`Spline`)::

    PCP(x) = q(t) + alpha min(t, 0)^3 + k3 max(t - x_L, 0)^3,   t = clamp(x, -1, 1)

with ``q`` the middle piece; every path below evaluates this function or, equivalently,
eq. (12) on the piece that ``t`` falls in.

==============  ==================================  =====================================
kernel          forward and d/dx                    d/d(table)
==============  ==================================  =====================================
``"blocked"``   CPU, in place per L2-sized block,   CPU, L2-blocked sums of grad * t^p
                truncated-power form                (accumulated in float64)
fused (CUDA;    one jiterator kernel each way       dense sums (as ``"generic"``)
only "auto")
``"generic"``   torch.where piece selection +       dense sums of grad * t^p, >= float32
                Horner, eq. (12); any table
==============  ==================================  =====================================

``kernel="auto"`` (what :func:`cfdan.pcp.pcp` and :class:`cfdan.pcp.PCP` run) picks
"blocked" on the CPU and the fused kernel on CUDA when the table is C2 and held on the
CPU, and "generic" otherwise (a table on the GPU, a non-C2 table, torch.compile tracing);
the blocked d/d(table) sums need no C2 table and serve every CPU input under "auto".
Learnable PCP on CUDA keeps its parameters on the GPU instead (:func:`pcp_spline`:
the truncated-power form's 7 numbers as one device tensor, so there is no device sync).

float16 / bfloat16 inputs are evaluated in float32 and rounded once at the end.

Public API: :func:`pcp_table`, :func:`pcp_spline`, :func:`spline_form`,
:func:`spline_parameters`, :func:`remember_spline`, :func:`jiterator_kernels`,
:class:`Spline`, ``Kernel``, ``KERNELS``, ``CPU_BLOCK``, ``PARALLEL_MIN``.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, NamedTuple

import torch
from torch import Tensor

__all__ = [
    "CPU_BLOCK",
    "KERNELS",
    "PARALLEL_MIN",
    "Kernel",
    "Spline",
    "jiterator_kernels",
    "pcp_spline",
    "pcp_table",
    "remember_spline",
    "spline_form",
    "spline_parameters",
]

Kernel = Literal["auto", "blocked", "generic"]
KERNELS: tuple[str, ...] = ("auto", "blocked", "generic")

#: CPU block length. The eager CPU kernels run ~15 in-place elementwise ops per block;
#: 2^15 float32 keeps a block and its scratch buffers in L2 cache (only x, y and grad
#: touch memory) and stays at ATen's grain size, so each small op runs single-threaded
#: (per-op thread-pool wake-ups cost more than they save at this size).
CPU_BLOCK = 1 << 15

#: Tensors with at least this many elements are split into contiguous parts that are
#: processed in parallel by Python threads (the ops release the GIL), one per torch thread.
PARALLEL_MIN = 1 << 18


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16 / bfloat16 inputs are evaluated in float32 and rounded once at the end."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


# --------------------------------------------------------------------------- spline form
class Spline(NamedTuple):
    """A table in truncated-power form: ``q(t) + alpha min(t,0)^3 + k3 max(t-x_L,0)^3``.

    ``q`` is the middle piece (a2, b, c, d). This is the same function as eq. (10)-(12)
    whenever pieces 1 and 2 share b, c, d and piece 3 differs from piece 2 by
    ``k3 (t - x_L)^3`` -- i.e. C2 continuity at 0 and x_L, which eq. (9) imposes.
    """

    a2: float
    b: float
    c: float
    d: float
    alpha: float
    k3: float
    x_L: float


def _as_spline(k: list[list[float]], x_L: float, rtol: float = 1e-12) -> Spline | None:
    (a1, b1, c1, d1), (a2, b, c, d), (a3, b3, c3, d3) = k
    alpha, k3 = a1 - a2, a3 - a2
    expect = (b, c, d, b - 3 * k3 * x_L, c + 3 * k3 * x_L**2, d - k3 * x_L**3)
    scale = max(1.0, *(abs(v) for row in k for v in row))
    ok = all(
        abs(u - v) <= rtol * scale for u, v in zip((b1, c1, d1, b3, c3, d3), expect, strict=True)
    )
    return Spline(a2, b, c, d, alpha, k3, x_L) if ok else None


def spline_form(coef: Tensor, x_L: float) -> Spline | None:
    """Truncated-power form of a (3, 4) table, or None if it is not C2 at 0 and x_L."""
    return _as_spline(coef.detach().double().tolist(), float(x_L))


# (a2, b, c, d, alpha, k3) = S @ table.flatten(): rows of the (3, 4) table in row-major order
_S_ROWS = (
    (0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0),  # a2
    (0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0),  # b
    (0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0),  # c
    (0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0),  # d
    (1, 0, 0, 0, -1, 0, 0, 0, 0, 0, 0, 0),  # alpha = a1 - a2
    (0, 0, 0, 0, -1, 0, 0, 0, 1, 0, 0, 0),  # k3 = a3 - a2
)


@functools.lru_cache(maxsize=16)
def _spline_matrix(dtype: torch.dtype, device: str) -> Tensor:
    return torch.tensor(_S_ROWS, dtype=dtype, device=device)


def spline_parameters(coef: Tensor, x_L: Tensor) -> Tensor:
    """``(a2, b, c, d, alpha, k3, x_L)`` of a C2 table as one tensor, differentiable."""
    S = _spline_matrix(coef.dtype, str(coef.device))
    return torch.cat([S @ coef.reshape(12), x_L.reshape(1).to(coef.dtype)])


def remember_spline(coef: Tensor, x_L: float) -> None:
    """Store the spline form on a table that is kept and reused (the cached fixed-parameter
    tables), so the kernels skip converting it in every call; valid while it is unmodified.

    Only for tables nobody writes to through ``.data`` (which bypasses the version check).
    """
    coef._cfdan_spline = (coef._version, spline_form(coef, x_L), float(x_L))


def _host_spline(x: Tensor, coef: Tensor, x_L: Tensor, kernel: str) -> Spline | None:
    """The spline for the fast kernels (CPU blocks / CUDA jiterator), or None when the
    generic path must be used (asked for, table on the GPU, not C2, torch.compile tracing)."""
    if kernel == "generic" or coef.device.type != "cpu" or x_L.device.type != "cpu":
        return None
    if x.device.type not in ("cpu", "cuda") or torch.compiler.is_compiling():
        return None
    xl = float(x_L)
    memo = getattr(coef, "_cfdan_spline", None)
    if memo is not None and memo[0] == coef._version and memo[2] == xl:
        return memo[1]
    return spline_form(coef, xl)


# --------------------------------------------------------------------------- CPU: L2 blocks
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


def _forward_cpu(x: Tensor, sp: Spline) -> Tensor:
    """Eq. (10) on CPU, in place per L2-sized block, in truncated-power form.

    ``alpha u^3 + k3 w^3`` with disjoint supports (u = min(t, 0), w = max(t - x_L, 0)) is
    ``(beta u + gamma w)^3`` with ``beta, gamma`` the cube roots of ``alpha, k3``: one cube
    for both corrections. 10 elementwise ops per block (Horner steps fused with
    ``addcmul``); :mod:`cfdan.pcp.bench` times the alternatives (torch.where selection +
    Horner, 0/1 indicator blending).
    """
    xf = x.detach().contiguous().reshape(-1)
    out = torch.empty_like(xf)
    wdt = _work_dtype(x.dtype)
    low = wdt != x.dtype
    n = xf.numel()
    size = max(1, min(n, CPU_BLOCK))
    K = _const_blocks(sp, wdt, size)
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


def _grad_x_cpu(x: Tensor, grad: Tensor, sp: Spline) -> Tensor:
    """``grad * dPCP/dx`` on CPU: ``q'(t) + 3 alpha min(t,0)^2 + 3 k3 max(t-x_L,0)^2``
    inside [-1, 1], exactly 0 outside (13 elementwise ops per block)."""
    xf = x.detach().contiguous().reshape(-1)
    gf = grad.detach().contiguous().reshape(-1)
    out = torch.empty_like(xf)
    wdt = _work_dtype(x.dtype)
    low = wdt != x.dtype
    n = xf.numel()
    size = max(1, min(n, CPU_BLOCK))
    K = _const_blocks(sp, wdt, size)
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


def _coef_grad_cpu(x: Tensor, grad: Tensor, x_L: float) -> Tensor:
    """d loss / d table (3, 4) on CPU, L2-blocked: per piece, sums of ``grad * t^p``.

    Same quantity as :func:`_coef_grad_generic` (block sums in the work dtype, accumulated
    in float64); returns float64.
    """
    xf = x.detach().contiguous().reshape(-1)
    gf = grad.detach().contiguous().reshape(-1)
    wdt = _work_dtype(x.dtype)
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


# --------------------------------------------------------------------------- generic ops
def _pieces(hi: Tensor, lo: Tensor, v: Tensor) -> Tensor:
    """Per-element value ``v[piece]`` (v has 3 entries) by ``torch.where``."""
    return torch.where(hi, v[2], torch.where(lo, v[0], v[1]))


def _forward_generic(x: Tensor, coef: Tensor, x_L: Tensor) -> Tensor:
    """Eq. (10) + Horner (12) with ``torch.where`` selection (any table and device)."""
    wdt = _work_dtype(x.dtype)
    k = coef.detach().to(dtype=wdt, device=x.device)
    t = x.to(wdt).clamp(-1.0, 1.0)
    hi, lo = t >= x_L.detach().to(dtype=wdt, device=x.device), t < 0
    y = _pieces(hi, lo, k[:, 0])
    for j in (1, 2, 3):
        y = torch.addcmul(_pieces(hi, lo, k[:, j]), y, t)
    return y.to(x.dtype)


def _grad_x_generic(x: Tensor, grad: Tensor, coef: Tensor, x_L: Tensor) -> Tensor:
    """``grad * dPCP/dx`` (eq. 12 differentiated; 0 outside [-1, 1]) with generic ops."""
    wdt = _work_dtype(x.dtype)
    k = coef.to(dtype=wdt, device=x.device)
    t = x.to(wdt).clamp(-1.0, 1.0)
    hi, lo = t >= x_L.to(dtype=wdt, device=x.device), t < 0
    d = _pieces(hi, lo, 3 * k[:, 0])
    d = torch.addcmul(_pieces(hi, lo, 2 * k[:, 1]), d, t)
    d = torch.addcmul(_pieces(hi, lo, k[:, 2]), d, t)
    d = torch.where(t == x, d, torch.zeros_like(d))
    return (grad.to(wdt) * d).to(x.dtype)


def _coef_grad_generic(x: Tensor, grad: Tensor, coef: Tensor, x_L: Tensor) -> Tensor:
    """d loss / d table (3, 4): per piece, sums of ``grad * t^p`` (p = 3, 2, 1, 0).

    Elements outside [-1, 1] count for the end pieces at ``t = -1`` / ``t = 1``: the
    constant extension equals the end piece's value there for every parameter setting,
    so this is also the right gradient for (x_L, P1, s_L). Accumulated in >= float32.
    """
    wdt = _work_dtype(x.dtype)
    acc = torch.promote_types(coef.dtype, torch.float32)
    g = grad.reshape(-1).to(acc)
    tt = x.to(wdt).clamp(-1.0, 1.0).reshape(-1).to(acc)
    hi = (tt >= x_L.to(dtype=wdt, device=x.device).to(acc)).to(acc)
    lo = (tt < 0).to(acc) * (1 - hi)
    t2 = tt * tt
    powers = (t2 * tt, t2, tt)
    rows = []
    for w in (lo * g, (1 - lo - hi) * g, hi * g):
        rows.append(torch.stack([*(torch.dot(w, p) for p in powers), w.sum()]))
    return torch.stack(rows).to(coef.dtype)


def _spline_terms(x: Tensor, prm: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(t, u = min(t, 0), w = max(t - x_L, 0)) in the dtype of the spline parameters."""
    t = x.to(prm.dtype).clamp(-1.0, 1.0)
    return t, t.clamp(max=0.0), (t - prm[6]).clamp(min=0.0)


def _spline_forward_generic(x: Tensor, prm: Tensor) -> Tensor:
    a2, b, c, d, al, k3, _ = prm.unbind()
    t, u, w = _spline_terms(x, prm)
    return ((a2 * t + b) * t + c) * t + d + al * u * u * u + k3 * w * w * w


def _spline_dx_generic(x: Tensor, prm: Tensor) -> Tensor:
    a2, b, c, _, al, k3, _ = prm.unbind()
    t, u, w = _spline_terms(x, prm)
    dx = (3 * a2 * t + 2 * b) * t + c + 3 * al * u * u + 3 * k3 * w * w
    return torch.where(t == x.to(prm.dtype), dx, torch.zeros_like(dx))


# --------------------------------------------------------------------------- CUDA: jiterator
# One fused elementwise kernel each way (NVRTC, compiled on first use per dtype): piece
# selection + Horner (eq. 12) on the C2 spline.
_JIT_FWD = """
template <typename T> T pcp_forward(T x, T a2, T b, T c, T d, T al, T k3, T xl) {
  T t = x < T(-1) ? T(-1) : (x > T(1) ? T(1) : x);
  T a = a2, bb = b, cc = c, dd = d;
  if (t < T(0)) {
    a = a2 + al;
  } else if (t >= xl) {
    a = a2 + k3; bb = b - T(3) * k3 * xl; cc = c + T(3) * k3 * xl * xl;
    dd = d - k3 * xl * xl * xl;
  }
  return ((a * t + bb) * t + cc) * t + dd;
}
"""
_JIT_BWD = """
template <typename T> T pcp_backward(T x, T g, T a2, T b, T c, T al, T k3, T xl) {
  if (!(x >= T(-1) && x <= T(1))) { return x != x ? x : T(0); }
  T a = a2, bb = b, cc = c;
  if (x < T(0)) {
    a = a2 + al;
  } else if (x >= xl) {
    a = a2 + k3; bb = b - T(3) * k3 * xl; cc = c + T(3) * k3 * xl * xl;
  }
  return g * ((T(3) * a * x + T(2) * bb) * x + cc);
}
"""
# the spline's numbers as extra (scalar) arguments, in the kernels' signature order
_JIT_SCALARS = (("a2", "b", "c", "d", "al", "k3", "xl"), ("a2", "b", "c", "al", "k3", "xl"))
_jit_cache: dict[bool, tuple[Callable, Callable] | None] = {}


def jiterator_kernels(scalar_args: bool = True) -> tuple[Callable, Callable] | None:
    """(forward, backward) jiterator functions, or None where unavailable (cached).

    ``scalar_args``: the spline's numbers are passed as Python numbers (a fixed table on the
    host); otherwise as 0-dim tensor inputs (learnable parameters on the GPU, no host copy).
    """
    if scalar_args not in _jit_cache:
        try:
            from torch.cuda.jiterator import _create_jit_fn

            kinds = zip((_JIT_FWD, _JIT_BWD), _JIT_SCALARS, strict=True)
            if scalar_args:
                fns = tuple(_create_jit_fn(c, **dict.fromkeys(names, 0.0)) for c, names in kinds)
            else:
                fns = tuple(_create_jit_fn(c) for c, _ in kinds)
            _jit_cache[scalar_args] = fns
        except Exception:  # no NVRTC / jiterator: use the generic ops
            _jit_cache[scalar_args] = None
    return _jit_cache[scalar_args]


def _jit(kind: int, scalar_args: bool, *inputs: Tensor, **scalars: float) -> Tensor | None:
    """Run jiterator kernel ``kind`` (0 forward, 1 backward); None where unavailable or
    failing (then it is not tried again)."""
    fns = jiterator_kernels(scalar_args)
    if fns is None:
        return None
    try:
        return fns[kind](*inputs, **scalars)
    except Exception:
        _jit_cache[scalar_args] = None
        return None


def _jit_table(kind: int, x: Tensor, *tensors: Tensor, sp: Spline) -> Tensor | None:
    """Fused CUDA kernel for a host table, in float32/float64 (low precision is upcast)."""
    wdt = _work_dtype(x.dtype)
    args = dict(a2=sp.a2, b=sp.b, c=sp.c, al=sp.alpha, k3=sp.k3, xl=sp.x_L)
    if kind == 0:
        args["d"] = sp.d
    out = _jit(kind, True, *(t.to(wdt) for t in (x, *tensors)), **args)
    return None if out is None else out.to(x.dtype)


# --------------------------------------------------------------------------- autograd
class _TableFunction(torch.autograd.Function):
    """PCP from a (3, 4) table (eq. 10/12), analytic backward; saves only ``x`` and the table."""

    @staticmethod
    def forward(ctx, x: Tensor, coef: Tensor, x_L: Tensor, kernel: str) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, coef, x_L)
        ctx.kernel = kernel
        sp = _host_spline(x, coef, x_L, kernel)
        if sp is not None:
            if x.device.type == "cpu":
                return _forward_cpu(x, sp)
            y = _jit_table(0, x, sp=sp)
            if y is not None:
                return y
        return _forward_generic(x, coef, x_L)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x, coef, x_L = ctx.saved_tensors
        grad_x = grad_coef = None
        if ctx.needs_input_grad[0]:
            sp = _host_spline(x, coef, x_L, ctx.kernel)
            if sp is not None:
                if x.device.type == "cpu":
                    grad_x = _grad_x_cpu(x, grad, sp)
                else:
                    grad_x = _jit_table(1, x, grad, sp=sp)
            if grad_x is None:
                grad_x = _grad_x_generic(x, grad, coef, x_L)
        if ctx.needs_input_grad[1]:
            blocked = ctx.kernel != "generic" and x.device.type == "cpu"
            if blocked and x_L.device.type == "cpu":
                grad_coef = _coef_grad_cpu(x, grad, float(x_L)).to(coef.dtype)
            else:
                grad_coef = _coef_grad_generic(x, grad, coef, x_L)
            grad_coef = grad_coef.to(coef.device)
        return grad_x, grad_coef, None, None


class _SplineFunction(torch.autograd.Function):
    """PCP from the 7 spline parameters ``(a2, b, c, d, alpha, k3, x_L)`` on the input's
    device; one fused kernel each way where the jiterator is available. Saves only ``x``
    and the parameters."""

    @staticmethod
    def forward(ctx, x: Tensor, prm: Tensor, kernel: str) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, prm)
        ctx.fused = x.is_cuda and kernel == "auto"
        wdt = _work_dtype(x.dtype)
        p = prm.detach().to(wdt)
        y = _jit(0, False, x.to(wdt), *p.unbind()) if ctx.fused else None
        return (_spline_forward_generic(x, p) if y is None else y).to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x, prm = ctx.saved_tensors
        wdt = _work_dtype(x.dtype)
        grad_x = grad_p = None
        if ctx.needs_input_grad[0]:
            p = prm.to(wdt)
            if ctx.fused:
                a2, b, c, _, al, k3, xl = p.unbind()
                grad_x = _jit(1, False, x.to(wdt), grad.to(wdt), a2, b, c, al, k3, xl)
            if grad_x is None:
                grad_x = grad.to(wdt) * _spline_dx_generic(x, p)
            grad_x = grad_x.to(x.dtype)
        if ctx.needs_input_grad[1]:
            acc = torch.promote_types(prm.dtype, torch.float32)
            p = prm.to(acc)
            t, u, w = _spline_terms(x.reshape(-1), p)
            g = grad.reshape(-1).to(acc)
            t2, w2 = t * t, w * w
            terms = torch.stack([t2 * t, t2, t, torch.ones_like(t), u * u * u, w2 * w, w2])
            s = terms @ g  # (7,)
            # d/dx_L of k3 max(t - x_L, 0)^3 is -3 k3 max(t - x_L, 0)^2 (the piece
            # boundary itself moves without a jump: C2 at x_L)
            grad_p = torch.cat([s[:6], (-3 * p[5] * s[6]).reshape(1)]).to(prm.dtype)
        return grad_x, grad_p, None


# --------------------------------------------------------------------------- entry points
def _check_kernel(kernel: str) -> None:
    if kernel not in KERNELS:
        raise ValueError(f"unknown PCP kernel {kernel!r}; expected one of {KERNELS}")


def pcp_table(x: Tensor, coef: Tensor, x_L: Tensor, *, kernel: Kernel = "auto") -> Tensor:
    """PCP(x) for a (3, 4) table ``coef`` and 0-dim knot ``x_L``; gradients flow to ``x``
    and ``coef``. ``kernel``: "auto" (dispatch as in the module docstring), "blocked" (the
    CPU kernels; ``ValueError`` unless ``x`` is on the CPU and the table is a C2 spline
    there) or "generic" (torch.where + Horner and dense sums, for any table and device)."""
    _check_kernel(kernel)
    if kernel == "blocked" and (
        x.device.type != "cpu" or _host_spline(x, coef, x_L, kernel) is None
    ):
        raise ValueError(
            "the blocked PCP kernel needs a CPU input and a C2 table (eq. 9) on the CPU"
        )
    return _TableFunction.apply(x, coef, x_L, kernel)


def pcp_spline(x: Tensor, prm: Tensor, *, kernel: Kernel = "auto") -> Tensor:
    """PCP(x) from :func:`spline_parameters` ``prm`` on ``x``'s device; gradients flow to
    ``x`` and ``prm``. ``kernel``: "auto" (fused jiterator kernels on CUDA, generic ops
    elsewhere) or "generic"; there is no blocked CPU kernel for this form."""
    _check_kernel(kernel)
    if kernel == "blocked":
        raise ValueError("pcp_spline has no blocked kernel; use 'auto' or 'generic'")
    return _SplineFunction.apply(x, prm, kernel)
