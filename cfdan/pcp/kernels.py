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
:class:`Spline`, ``Kernel``, ``KERNELS``, ``CPU_BLOCK``, ``PARALLEL_MIN``. The CPU kernels
themselves are in :mod:`cfdan.pcp.blocked`, the truncated-power form in
:mod:`cfdan.pcp.spline`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from cfdan.pcp import blocked
from cfdan.pcp.blocked import CPU_BLOCK, PARALLEL_MIN, work_dtype
from cfdan.pcp.spline import Spline, remember_spline, spline_form, spline_parameters

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


# --------------------------------------------------------------------------- generic ops
def _pieces(hi: Tensor, lo: Tensor, v: Tensor) -> Tensor:
    """Per-element value ``v[piece]`` (v has 3 entries) by ``torch.where``."""
    return torch.where(hi, v[2], torch.where(lo, v[0], v[1]))


def _forward_generic(x: Tensor, coef: Tensor, x_L: Tensor) -> Tensor:
    """Eq. (10) + Horner (12) with ``torch.where`` selection (any table and device)."""
    wdt = work_dtype(x.dtype)
    k = coef.detach().to(dtype=wdt, device=x.device)
    t = x.to(wdt).clamp(-1.0, 1.0)
    hi, lo = t >= x_L.detach().to(dtype=wdt, device=x.device), t < 0
    y = _pieces(hi, lo, k[:, 0])
    for j in (1, 2, 3):
        y = torch.addcmul(_pieces(hi, lo, k[:, j]), y, t)
    return y.to(x.dtype)


def _grad_x_generic(x: Tensor, grad: Tensor, coef: Tensor, x_L: Tensor) -> Tensor:
    """``grad * dPCP/dx`` (eq. 12 differentiated; 0 outside [-1, 1]) with generic ops."""
    wdt = work_dtype(x.dtype)
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
    wdt = work_dtype(x.dtype)
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
    wdt = work_dtype(x.dtype)
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
                return blocked.forward(x, sp)
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
                    grad_x = blocked.grad_x(x, grad, sp)
                else:
                    grad_x = _jit_table(1, x, grad, sp=sp)
            if grad_x is None:
                grad_x = _grad_x_generic(x, grad, coef, x_L)
        if ctx.needs_input_grad[1]:
            on_cpu = ctx.kernel != "generic" and x.device.type == "cpu"
            if on_cpu and x_L.device.type == "cpu":
                grad_coef = blocked.coef_grad(x, grad, float(x_L)).to(coef.dtype)
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
        wdt = work_dtype(x.dtype)
        p = prm.detach().to(wdt)
        y = _jit(0, False, x.to(wdt), *p.unbind()) if ctx.fused else None
        return (_spline_forward_generic(x, p) if y is None else y).to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x, prm = ctx.saved_tensors
        wdt = work_dtype(x.dtype)
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
