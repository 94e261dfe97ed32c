"""The piecewise cubic polynomial activation PCP(x) of §3.4 (eqs. 6-12).

PCP is a C1 (C2 inside (-1, 1)) cubic Hermite spline through the knots
``x = -1, 0, x_L, 1`` with values ``P1, 0, P3, 1`` (eq. 7-8), slope 0 at -1 and 1,
slope ``s_L * (0 - P1) / (0 - (-1))`` at 0 (eq. 6), and ``P3``, ``dP3/dx(x_L)`` chosen so
that the second derivative is continuous at 0 and ``x_L`` (eq. 9). Outside [-1, 1] it is
the constant ``P1`` (left) or 1 (right), eq. (10).

Each piece is stored as the monomial coefficients ``(a, b, c, d)`` of eq. (11) and
evaluated in the Horner form of eq. (12). The closed forms of ``P3`` and ``dP3/dx`` used
here were derived with SymPy (:mod:`cfdan.symbolic`) and are checked against it in the
tests.

Public API: :func:`coefficients`, :func:`pcp`, :class:`PCP`.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = [
    "DEFAULT_P1",
    "DEFAULT_S_L",
    "DEFAULT_X_L",
    "PCP",
    "coefficients",
    "knot_values",
    "pcp",
    "pcp_from_coefficients",
    "validate_parameters",
]

#: The paper's best setting (§4.5): ``x_L = 0.19, P1 = -0.24, s_L = 1.85``.
DEFAULT_X_L = 0.19
DEFAULT_P1 = -0.24
DEFAULT_S_L = 1.85

#: Margin used to keep learnable parameters strictly inside their domain.
DOMAIN_EPS = 1e-3

Number = float | int
ParamLike = Number | Tensor


# --------------------------------------------------------------------------- parameters
def validate_parameters(x_L: ParamLike, P1: ParamLike, s_L: ParamLike) -> None:
    """Raise ``ValueError`` naming the first shape parameter outside its domain.

    Domains: ``0 < x_L < 1`` (the middle knot must split (0, 1)), ``P1 < 0`` (PCP maps
    the negative side to a small negative interval, §4.4), ``s_L > 0`` (eq. 6).
    Tensors are checked too (this reads their value, i.e. synchronises a CUDA tensor).
    """
    checks = (
        ("x_L", x_L, lambda v: 0.0 < v < 1.0, "0 < x_L < 1"),
        ("P1", P1, lambda v: v < 0.0, "P1 < 0"),
        ("s_L", s_L, lambda v: v > 0.0, "s_L > 0"),
    )
    for name, value, ok, domain in checks:
        v = float(value.detach()) if isinstance(value, Tensor) else float(value)
        if not math.isfinite(v) or not ok(v):
            raise ValueError(f"PCP parameter {name}={v!r} is outside its domain ({domain})")


def _as_tensors(*values: ParamLike) -> list[Tensor]:
    """Convert floats / 0-dim tensors to tensors of one common floating dtype.

    The dtype follows the tensor inputs (promoted); with no tensor input it is float64.
    """
    tensors = [v for v in values if isinstance(v, Tensor)]
    if tensors:
        dtype = functools.reduce(torch.promote_types, [t.dtype for t in tensors])
        if not dtype.is_floating_point:
            dtype = torch.float64
        device = tensors[0].device
    else:
        dtype, device = torch.float64, torch.device("cpu")
    out = []
    for v in values:
        if isinstance(v, Tensor):
            if v.numel() != 1:
                raise ValueError(
                    f"PCP shape parameters must be scalars, got shape {tuple(v.shape)}"
                )
            out.append(v.reshape(()).to(dtype=dtype, device=device))
        else:
            out.append(torch.tensor(float(v), dtype=dtype, device=device))
    return out


def knot_values(x_L: ParamLike, P1: ParamLike, s_L: ParamLike) -> tuple[Tensor, Tensor]:
    """``P3 = PCP(x_L)`` and ``m3 = dPCP/dx(x_L)`` from the C2 conditions of eq. (9).

    Closed form of the 2x2 linear system (derived in :func:`cfdan.symbolic.solve_knot`):

        P3 = x_L (P1 (5 s_L x_L^2 - 2 s_L x_L - 3 s_L - 6 x_L^2 + 6 x_L) + 3 x_L) / 3
        m3 = P1 (5 s_L x_L^2 - s_L - 6 x_L^2 + 3 x_L) + 3 x_L
    """
    xl, p1, sl = _as_tensors(x_L, P1, s_L)
    xl2 = xl * xl
    p3 = xl * (p1 * (5 * sl * xl2 - 2 * sl * xl - 3 * sl - 6 * xl2 + 6 * xl) + 3 * xl) / 3
    m3 = p1 * (5 * sl * xl2 - sl - 6 * xl2 + 3 * xl) + 3 * xl
    return p3, m3


def coefficients(x_L: ParamLike, P1: ParamLike, s_L: ParamLike) -> Tensor:
    """The (3, 4) table of eq. (11): rows = pieces on [-1, 0), [0, x_L), [x_L, 1];
    columns = (a, b, c, d) of ``a x^3 + b x^2 + c x + d``.

    Hand-written closed forms of the SymPy solution (:func:`cfdan.symbolic.closed_form_coefficients`;
    the tests compare the two). With ``D = (1 - x_L)^2``::

        piece 1: a = P1 (2 - s_L),  b = P1 (3 - 2 s_L),  c = -P1 s_L,  d = 0
        piece 2: a = (P1 (5 s_L x_L + 4 s_L - 6 x_L - 3) + 3) / (3 x_L),  b, c, d as piece 1
        piece 3: a = (P1 (5 s_L x_L^2 - 6 s_L x_L - 3 s_L - 6 x_L^2 + 9 x_L) + 3 x_L - 6) / (3 D)
                 b = (3 - P1 (2 s_L (x_L^2 - 2 x_L - 1) - 3 x_L^2 + 6 x_L)) / D
                 c = -(P1 (s_L (1 + x_L)^2 - 3 x_L) + 3 x_L) / D
                 d = x_L^2 (P1 (4 s_L - 3) + 3) / (3 D)

    Pieces 1 and 2 share b, c, d exactly: C2 continuity at 0 fixes the value, slope and
    curvature there. Differentiable in the three parameters (floats or 0-dim tensors);
    the dtype follows the tensor arguments (float64 when all are Python numbers). No
    domain check here; see :func:`validate_parameters`.
    """
    xl, p1, sl = _as_tensors(x_L, P1, s_L)
    W, V = _closed_form_matrices(xl.dtype, str(xl.device))
    powers = torch.stack([torch.ones_like(xl), xl, xl * xl])  # 1, x_L, x_L^2
    basis = torch.stack([torch.ones_like(p1), p1, p1 * sl])  # 1, P1, P1 s_L
    numer = W @ torch.outer(basis, powers).reshape(9)
    return (numer / (V @ powers)).reshape(3, 4)


# Every coefficient above is (affine in 1, P1, P1 s_L) x (quadratic in x_L) over a
# denominator 1, 3 x_L or 3 (1 - x_L)^2, so the table is W f / (V p) with the constant
# matrices below, f = (1, P1, P1 s_L) (x) (1, x_L, x_L^2), p = (1, x_L, x_L^2): a handful of
# tensor ops instead of ~50 (it runs in every forward of a learnable PCP).
# fmt: off
_W_ROWS = (  # numerators; columns: 1, x_L, x_L^2 | P1, P1 x_L, P1 x_L^2 | P1 s_L, ...
    (0, 0, 0,    2, 0, 0,     -1, 0, 0),    # a1 = P1 (2 - s_L)
    (0, 0, 0,    3, 0, 0,     -2, 0, 0),    # b  = P1 (3 - 2 s_L)
    (0, 0, 0,    0, 0, 0,     -1, 0, 0),    # c  = -P1 s_L
    (0, 0, 0,    0, 0, 0,      0, 0, 0),    # d  = 0
    (3, 0, 0,   -3, -6, 0,     4, 5, 0),    # a2 * 3 x_L
    (0, 0, 0,    3, 0, 0,     -2, 0, 0),    # b
    (0, 0, 0,    0, 0, 0,     -1, 0, 0),    # c
    (0, 0, 0,    0, 0, 0,      0, 0, 0),    # d
    (-6, 3, 0,   0, 9, -6,    -3, -6, 5),   # a3 * 3 (1 - x_L)^2
    (9, 0, 0,    0, -18, 9,    6, 12, -6),  # b3 * 3 (1 - x_L)^2
    (0, -9, 0,   0, 9, 0,     -3, -6, -3),  # c3 * 3 (1 - x_L)^2
    (0, 0, 3,    0, 0, -3,     0, 0, 4),    # d3 * 3 (1 - x_L)^2
)
_V_ROWS = (  # denominators in (1, x_L, x_L^2)
    *((1, 0, 0),) * 4,
    (0, 3, 0),
    *((1, 0, 0),) * 3,
    *((3, -6, 3),) * 4,
)
# fmt: on


@functools.lru_cache(maxsize=16)
def _closed_form_matrices(dtype: torch.dtype, device: str) -> tuple[Tensor, Tensor]:
    return (
        torch.tensor(_W_ROWS, dtype=dtype, device=device),
        torch.tensor(_V_ROWS, dtype=dtype, device=device),
    )


@functools.lru_cache(maxsize=64)
def _cached_table_cpu(x_L: float, P1: float, s_L: float) -> tuple[Tensor, Tensor]:
    coef = coefficients(x_L, P1, s_L)
    # remembered for the fast kernels (valid while the table is unmodified)
    coef._cfdan_spline = (coef._version, _as_spline(coef.tolist(), x_L), x_L)
    return coef, torch.tensor(x_L, dtype=torch.float64)


def _fixed_table(x_L: float, P1: float, s_L: float) -> tuple[Tensor, Tensor]:
    """float64 CPU (3, 4) table and x_L knot for fixed parameters (cached; read-only).

    Kept on the CPU for every input device: the fast kernels read it as Python numbers
    without a device sync; the generic path copies the 12 numbers to the device.
    """
    if torch.compiler.is_compiling():  # let dynamo trace plain code (constants)
        return coefficients(x_L, P1, s_L), torch.tensor(x_L, dtype=torch.float64)
    return _cached_table_cpu(x_L, P1, s_L)


#: CPU block length. The eager CPU kernels run ~15 in-place elementwise ops per block;
#: 2^15 float32 keeps a block and its scratch buffers in L2 cache (only x, y and grad
#: touch memory) and stays at ATen's grain size, so each small op runs single-threaded
#: (per-op thread-pool wake-ups cost more than they save at this size).
CPU_BLOCK = 1 << 15

#: Tensors with at least this many elements are split into contiguous parts that are
#: processed in parallel by Python threads (the ops release the GIL), one per torch thread.
PARALLEL_MIN = 1 << 18

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


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16 / bfloat16 inputs are evaluated in float32 and rounded once at the end."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class _Spline(NamedTuple):
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


def _as_spline(k: list[list[float]], x_L: float, rtol: float = 1e-12) -> _Spline | None:
    """Truncated-power form of a (3, 4) table, or None if the table is not C2 at 0 / x_L."""
    (a1, b1, c1, d1), (a2, b, c, d), (a3, b3, c3, d3) = k
    alpha, k3 = a1 - a2, a3 - a2
    expect = (b, c, d, b - 3 * k3 * x_L, c + 3 * k3 * x_L**2, d - k3 * x_L**3)
    scale = max(1.0, *(abs(v) for row in k for v in row))
    ok = all(
        abs(u - v) <= rtol * scale for u, v in zip((b1, c1, d1, b3, c3, d3), expect, strict=True)
    )
    return _Spline(a2, b, c, d, alpha, k3, x_L) if ok else None


def _split(t: Tensor, size: int) -> tuple[Tensor, ...]:
    """Blocks of a flat tensor (no split call for a single block: it costs microseconds)."""
    return (t,) if t.numel() <= size else t.split(size)


@functools.lru_cache(maxsize=256)
def _scalars(dtype: torch.dtype, *values: float) -> tuple[Tensor, ...]:
    """0-dim CPU tensors for the in-place ops (cheaper per op than Python floats; cached,
    never written to)."""
    return tuple(torch.tensor(v, dtype=dtype) for v in values)


@functools.lru_cache(maxsize=64)
def _const_blocks(sp: _Spline, dtype: torch.dtype, size: int) -> dict[str, Tensor]:
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


def _forward_cpu(x: Tensor, sp: _Spline) -> Tensor:
    """Eq. (10) on CPU, in place per L2-sized block, truncated-power form of :class:`_Spline`.

    ``alpha u^3 + k3 w^3`` with disjoint supports (u = min(t, 0), w = max(t - x_L, 0)) is
    ``(beta u + gamma w)^3`` with ``beta, gamma`` the cube roots of ``alpha, k3``: one cube
    for both corrections. 10 elementwise ops per block (Horner steps fused with
    ``addcmul``); :mod:`cfdan.pcp_bench` times the alternatives (torch.where selection +
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


def _grad_x_cpu(x: Tensor, grad: Tensor, sp: _Spline) -> Tensor:
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

    Same quantity as :func:`_coefficient_grad` (block sums in the work dtype, accumulated
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


def _pieces(hi: Tensor, lo: Tensor, v: Tensor) -> Tensor:
    """Tensor path: per-element value ``v[piece]`` (v has 3 entries) by ``torch.where``."""
    return torch.where(hi, v[2], torch.where(lo, v[0], v[1]))


def _forward_tensor(x: Tensor, k: Tensor, x_L: Tensor) -> Tensor:
    """Eq. (10) + Horner (12) with ``torch.where`` selection (CUDA, torch.compile)."""
    wdt = _work_dtype(x.dtype)
    t = x.to(wdt).clamp(-1.0, 1.0)
    hi, lo = t >= x_L, t < 0
    y = _pieces(hi, lo, k[:, 0])
    for j in (1, 2, 3):
        y = torch.addcmul(_pieces(hi, lo, k[:, j]), y, t)
    return y.to(x.dtype)


def _derivative_tensor(x: Tensor, k: Tensor, x_L: Tensor) -> tuple[Tensor, Tensor]:
    """(dPCP/dx in the work dtype, clamped input t) for the tensor path."""
    t = x.to(_work_dtype(x.dtype)).clamp(-1.0, 1.0)
    hi, lo = t >= x_L, t < 0
    d = _pieces(hi, lo, 3 * k[:, 0])
    d = torch.addcmul(_pieces(hi, lo, 2 * k[:, 1]), d, t)
    d = torch.addcmul(_pieces(hi, lo, k[:, 2]), d, t)
    return torch.where(t == x, d, torch.zeros_like(d)), t


# CUDA: one fused elementwise kernel each way via the jiterator (NVRTC, compiled on first
# use per dtype). Same function: piece selection + Horner (eq. 12) on the C2 spline.
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
_jit_state: dict[str, object] = {}


def _jit_fns():
    """(forward, backward) jiterator functions, or None where unavailable (cached)."""
    if "fns" not in _jit_state:
        try:
            from torch.cuda.jiterator import _create_jit_fn

            # extra arguments are passed in the order of these defaults: keep the
            # kernels' signature order
            fwd = dict.fromkeys(("a2", "b", "c", "d", "al", "k3", "xl"), 0.0)
            bwd = dict.fromkeys(("a2", "b", "c", "al", "k3", "xl"), 0.0)
            _jit_state["fns"] = (_create_jit_fn(_JIT_FWD, **fwd), _create_jit_fn(_JIT_BWD, **bwd))
        except Exception:  # no NVRTC / jiterator: use the tensor path
            _jit_state["fns"] = None
    return _jit_state["fns"]


def _jit_call(kind: int, x: Tensor, *tensors: Tensor, sp: _Spline) -> Tensor | None:
    """Run the fused CUDA kernel in float32/float64 (low precision is upcast); None on failure."""
    fns = _jit_fns()
    if fns is None:
        return None
    wdt = _work_dtype(x.dtype)
    args = dict(a2=sp.a2, b=sp.b, c=sp.c, al=sp.alpha, k3=sp.k3, xl=sp.x_L)
    if kind == 0:
        args["d"] = sp.d
    try:
        out = fns[kind](*(t.to(wdt) for t in (x, *tensors)), **args)
    except Exception:
        _jit_state["fns"] = None
        return None
    return out.to(x.dtype)


def _coefficient_grad(grad: Tensor, t: Tensor, x_L: Tensor, dtype: torch.dtype) -> Tensor:
    """d loss / d table (3, 4): per piece, sums of ``grad * t^p`` (p = 3, 2, 1, 0).

    Elements outside [-1, 1] count for the end pieces at ``t = -1`` / ``t = 1``: the
    constant extension equals the end piece's value there for every parameter setting,
    so this is also the right gradient for (x_L, P1, s_L). Accumulated in >= float32.
    """
    acc = torch.promote_types(dtype, torch.float32)
    g = grad.reshape(-1).to(acc)
    tt = t.reshape(-1).to(acc)
    hi = (tt >= x_L.to(acc)).to(acc)
    lo = (tt < 0).to(acc) * (1 - hi)
    t2 = tt * tt
    powers = (t2 * tt, t2, tt)
    rows = []
    for w in (lo * g, (1 - lo - hi) * g, hi * g):
        rows.append(torch.stack([*(torch.dot(w, p) for p in powers), w.sum()]))
    return torch.stack(rows).to(dtype)


#: Set False to force the generic torch.where + Horner path (tests, benchmarks).
FAST_KERNELS = True


def _host_spline(x: Tensor, coef: Tensor, x_L: Tensor) -> _Spline | None:
    """The spline for the fast kernels (CPU blocks / CUDA jiterator), or None when the
    generic tensor path must be used (table on the GPU, not C2, torch.compile tracing)."""
    if not FAST_KERNELS or coef.device.type != "cpu" or x_L.device.type != "cpu":
        return None
    if x.device.type not in ("cpu", "cuda") or torch.compiler.is_compiling():
        return None
    xl = float(x_L)
    memo = getattr(coef, "_cfdan_spline", None)
    if memo is not None and memo[0] == coef._version and memo[2] == xl:
        return memo[1]
    return _as_spline(coef.detach().double().tolist(), xl)


class _PCPFunction(torch.autograd.Function):
    """PCP forward (eq. 10/12) and analytic backward; saves only ``x`` and the table."""

    @staticmethod
    def forward(ctx, x: Tensor, coef: Tensor, x_L: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, coef, x_L)
        sp = _host_spline(x, coef, x_L)
        if sp is not None:
            if x.device.type == "cpu":
                return _forward_cpu(x, sp)
            y = _jit_call(0, x, sp=sp)
            if y is not None:
                return y
        wdt = _work_dtype(x.dtype)
        k = coef.detach().to(dtype=wdt, device=x.device)
        return _forward_tensor(x, k, x_L.detach().to(dtype=wdt, device=x.device))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x, coef, x_L = ctx.saved_tensors
        need_x, need_coef = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x = grad_coef = None
        wdt = _work_dtype(x.dtype)
        if need_x:
            sp = _host_spline(x, coef, x_L)
            if sp is not None:
                if x.device.type == "cpu":
                    grad_x = _grad_x_cpu(x, grad, sp)
                else:
                    grad_x = _jit_call(1, x, grad, sp=sp)
            if grad_x is None:
                k = coef.to(dtype=wdt, device=x.device)
                d, _ = _derivative_tensor(x, k, x_L.to(dtype=wdt, device=x.device))
                grad_x = (grad.to(wdt) * d).to(x.dtype)
        if need_coef:
            if x.device.type == "cpu" and x_L.device.type == "cpu":
                grad_coef = _coef_grad_cpu(x, grad, float(x_L)).to(coef.dtype)
            else:
                t = x.to(wdt).clamp(-1.0, 1.0)
                xl = x_L.to(dtype=wdt, device=x.device)
                grad_coef = _coefficient_grad(grad, t, xl, coef.dtype)
            grad_coef = grad_coef.to(coef.device)
        return grad_x, grad_coef, None


_jit_tensor_state: dict[str, object] = {}


def _jit_tensor_fns():
    """Jiterator kernels taking the spline parameters as 0-dim *tensor* inputs (no host
    copy, so no device sync for learnable parameters); None where unavailable."""
    if "fns" not in _jit_tensor_state:
        try:
            from torch.cuda.jiterator import _create_jit_fn

            _jit_tensor_state["fns"] = (_create_jit_fn(_JIT_FWD), _create_jit_fn(_JIT_BWD))
        except Exception:
            _jit_tensor_state["fns"] = None
    return _jit_tensor_state["fns"]


def _spline_terms(x: Tensor, prm: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Generic ops: (t, u = min(t, 0), w = max(t - x_L, 0)) in the work dtype."""
    t = x.to(prm.dtype).clamp(-1.0, 1.0)
    return t, t.clamp(max=0.0), (t - prm[6]).clamp(min=0.0)


def _spline_forward_generic(x: Tensor, prm: Tensor) -> Tensor:
    a2, b, c, d, al, k3, _ = prm.unbind()
    t, u, w = _spline_terms(x, prm)
    y = ((a2 * t + b) * t + c) * t + d + al * u * u * u + k3 * w * w * w
    return y


def _spline_dx_generic(x: Tensor, prm: Tensor) -> Tensor:
    a2, b, c, _, al, k3, _ = prm.unbind()
    t, u, w = _spline_terms(x, prm)
    dx = (3 * a2 * t + 2 * b) * t + c + 3 * al * u * u + 3 * k3 * w * w
    return torch.where(t == x.to(prm.dtype), dx, torch.zeros_like(dx))


class _PCPSplineFunction(torch.autograd.Function):
    """PCP in truncated-power form with its 7 spline parameters as one tensor
    ``(a2, b, c, d, alpha, k3, x_L)`` on the input's device (learnable PCP on the GPU):
    ``PCP = ((a2 t + b) t + c) t + d + alpha min(t, 0)^3 + k3 max(t - x_L, 0)^3``,
    ``t = clamp(x, -1, 1)``; one fused kernel each way where the jiterator is available.
    Saves only ``x`` and the parameters."""

    @staticmethod
    def forward(ctx, x: Tensor, prm: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, prm)
        wdt = _work_dtype(x.dtype)
        p = prm.detach().to(wdt)
        fns = _jit_tensor_fns() if x.is_cuda and FAST_KERNELS else None
        if fns is not None:
            try:
                return fns[0](x.to(wdt), *p.unbind()).to(x.dtype)
            except Exception:
                _jit_tensor_state["fns"] = None
        return _spline_forward_generic(x, p).to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x, prm = ctx.saved_tensors
        wdt = _work_dtype(x.dtype)
        grad_x = grad_p = None
        if ctx.needs_input_grad[0]:
            p = prm.to(wdt)
            fns = _jit_tensor_fns() if x.is_cuda and FAST_KERNELS else None
            if fns is not None:
                try:
                    a2, b, c, _, al, k3, xl = p.unbind()
                    grad_x = fns[1](x.to(wdt), grad.to(wdt), a2, b, c, al, k3, xl).to(x.dtype)
                except Exception:
                    _jit_tensor_state["fns"] = None
            if grad_x is None:
                grad_x = (grad.to(wdt) * _spline_dx_generic(x, p)).to(x.dtype)
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
        return grad_x, grad_p


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


def _spline_parameters(coef: Tensor, x_L: Tensor) -> Tensor:
    """(a2, b, c, d, alpha, k3, x_L) of a C2 table (differentiable): see :class:`_Spline`."""
    S = _spline_matrix(coef.dtype, str(coef.device))
    return torch.cat([S @ coef.reshape(12), x_L.reshape(1).to(coef.dtype)])


def pcp_from_coefficients(x: Tensor, coef: Tensor, x_L: ParamLike) -> Tensor:
    """PCP(x) for a precomputed (3, 4) table ``coef`` (see :func:`coefficients`).

    Gradients flow to ``x`` and, if it requires grad, to ``coef``.
    """
    if not x.is_floating_point():
        raise TypeError(f"pcp expects a floating-point tensor, got {x.dtype}")
    if coef.shape != (3, 4):
        raise ValueError(f"PCP coefficient table must have shape (3, 4), got {tuple(coef.shape)}")
    xl = x_L if isinstance(x_L, Tensor) else torch.tensor(float(x_L), dtype=torch.float64)
    return _PCPFunction.apply(x, coef, xl.reshape(()))


def pcp(
    x: Tensor,
    x_L: ParamLike = DEFAULT_X_L,
    P1: ParamLike = DEFAULT_P1,
    s_L: ParamLike = DEFAULT_S_L,
) -> Tensor:
    """PCP(x) of eq. (10), elementwise; output in ``x.dtype`` (float16 / bfloat16 are
    evaluated in float32 and rounded once).

    Shape parameters may be floats (validated; coefficient table cached) or 0-dim tensors
    (gradients then flow to them through :func:`coefficients`; not validated here, which
    would need a device sync -- use :func:`validate_parameters` or :class:`PCP`).
    """
    if any(isinstance(v, Tensor) for v in (x_L, P1, s_L)):
        coef = coefficients(x_L, P1, s_L)
        xl = x_L if isinstance(x_L, Tensor) else torch.tensor(float(x_L), dtype=coef.dtype)
        return pcp_from_coefficients(x, coef, xl)
    validate_parameters(x_L, P1, s_L)
    coef, xl = _fixed_table(float(x_L), float(P1), float(s_L))
    return pcp_from_coefficients(x, coef, xl)


# --------------------------------------------------------------------------- module
@functools.lru_cache(maxsize=8)
def _domain_bounds(device: str) -> tuple[Tensor, Tensor]:
    eps, inf = DOMAIN_EPS, math.inf
    lo = torch.tensor([eps, -inf, eps], dtype=torch.float64, device=device)
    hi = torch.tensor([1 - eps, -eps, inf], dtype=torch.float64, device=device)
    return lo, hi


class PCP(nn.Module):
    """PCP activation (§3.4) as a module; defaults are the paper's best (§4.5).

    ``learnable=False``: fixed shape parameters; the (3, 4) coefficient table is computed
    once (float64, cached per device). ``learnable=True``: ``x_L``, ``P1`` and ``s_L`` are
    ``nn.Parameter`` s (the "adaptive adjustment" of §5) and the table is recomputed from
    them in every forward, so gradients reach them through eq. (9).

    Domain: ``0 < x_L < 1``, ``P1 < 0``, ``s_L > 0``; a value outside raises
    ``ValueError`` at construction. During training an optimiser may push a learnable
    parameter out of its domain; the forward then uses the value clamped to
    ``[eps, 1 - eps]`` / ``(-inf, -eps]`` / ``[eps, inf)`` (``eps = DOMAIN_EPS = 1e-3``)
    and that parameter gets no gradient while it stays outside.
    :meth:`effective_parameters` reports the values actually used.
    """

    def __init__(
        self,
        x_L: float = DEFAULT_X_L,
        P1: float = DEFAULT_P1,
        s_L: float = DEFAULT_S_L,
        learnable: bool = False,
    ) -> None:
        super().__init__()
        validate_parameters(x_L, P1, s_L)
        self.learnable = bool(learnable)
        self._fixed = (float(x_L), float(P1), float(s_L))
        if self.learnable:
            self.x_L = nn.Parameter(torch.tensor(float(x_L)))
            self.P1 = nn.Parameter(torch.tensor(float(P1)))
            self.s_L = nn.Parameter(torch.tensor(float(s_L)))

    def _clamped(self) -> tuple[Tensor, Tensor, Tensor]:
        """(x_L, P1, s_L) clamped into their domains, float64 (one clamp op)."""
        v = torch.stack([self.x_L, self.P1, self.s_L]).double()
        lo, hi = _domain_bounds(str(v.device))
        return v.clamp(lo, hi).unbind()

    def effective_parameters(self) -> dict[str, float]:
        """The (x_L, P1, s_L) values the forward uses (after clamping if learnable)."""
        names = ("x_L", "P1", "s_L")
        if not self.learnable:
            return dict(zip(names, self._fixed, strict=True))
        return {n: float(v.detach()) for n, v in zip(names, self._clamped(), strict=True)}

    def coefficients(self) -> Tensor:
        """The current (3, 4) coefficient table of eq. (11), float64."""
        if not self.learnable:
            return coefficients(*self._fixed)
        return coefficients(*self._clamped())

    def forward(self, x: Tensor) -> Tensor:
        if not self.learnable:
            coef, xl = _fixed_table(*self._fixed)
            return pcp_from_coefficients(x, coef, xl)
        x_l, p1, s_l = self._clamped()
        coef = coefficients(x_l, p1, s_l)
        if x.is_cuda and not torch.compiler.is_compiling():
            # parameters stay on the GPU: truncated-power form, fused kernels, no sync
            return _PCPSplineFunction.apply(x, _spline_parameters(coef, x_l))
        return pcp_from_coefficients(x, coef, x_l)

    def extra_repr(self) -> str:
        if self.learnable:
            p = {n: float(getattr(self, n).detach()) for n in ("x_L", "P1", "s_L")}
        else:
            p = self.effective_parameters()
        return (
            f"x_L={p['x_L']:.4g}, P1={p['P1']:.4g}, s_L={p['s_L']:.4g}, learnable={self.learnable}"
        )
