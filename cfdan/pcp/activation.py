"""The piecewise cubic polynomial activation PCP(x) of §3.4 (eqs. 6-12).

PCP is a C1 (C2 inside (-1, 1)) cubic Hermite spline through the knots
``x = -1, 0, x_L, 1`` with values ``P1, 0, P3, 1`` (eq. 7-8), slope 0 at -1 and 1,
slope ``s_L * (0 - P1) / (0 - (-1))`` at 0 (eq. 6), and ``P3``, ``dP3/dx(x_L)`` chosen so
that the second derivative is continuous at 0 and ``x_L`` (eq. 9). Outside [-1, 1] it is
the constant ``P1`` (left) or 1 (right), eq. (10).

Each piece is stored as the monomial coefficients ``(a, b, c, d)`` of eq. (11) and
evaluated in the Horner form of eq. (12). The closed forms of ``P3`` and ``dP3/dx`` used
here were derived with SymPy (:mod:`cfdan.pcp.symbolic`) and are checked against it in the
tests. How the table is evaluated on each device (kernels, autograd Functions) is
:mod:`cfdan.pcp.kernels`.

Public API: :func:`coefficients`, :func:`knot_values`, :func:`pcp`,
:func:`pcp_from_coefficients`, :func:`validate_parameters`, :class:`PCP`.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor, nn

from cfdan.pcp.kernels import Kernel, pcp_spline, pcp_table, remember_spline, spline_parameters

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

    Closed form of the 2x2 linear system (derived in :func:`cfdan.pcp.symbolic.solve_knot`):

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

    Hand-written closed forms of the SymPy solution (:func:`cfdan.pcp.symbolic.closed_form_coefficients`;
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
    remember_spline(coef, x_L)
    return coef, torch.tensor(x_L, dtype=torch.float64)


def _fixed_table(x_L: float, P1: float, s_L: float) -> tuple[Tensor, Tensor]:
    """float64 CPU (3, 4) table and x_L knot for fixed parameters (cached; read-only).

    Kept on the CPU for every input device: the fast kernels read it as Python numbers
    without a device sync; the generic path copies the 12 numbers to the device.
    """
    return _cached_table_cpu(x_L, P1, s_L)


# --------------------------------------------------------------------------- evaluation
#: Set False to run the generic torch.where + Horner kernels on every device (the CUDA
#: check of benchmarks/bench_activations.py compares both).
FAST_KERNELS = True


def _kernel() -> Kernel:
    return "auto" if FAST_KERNELS else "generic"


def pcp_from_coefficients(x: Tensor, coef: Tensor, x_L: ParamLike) -> Tensor:
    """PCP(x) for a precomputed (3, 4) table ``coef`` (see :func:`coefficients`).

    Gradients flow to ``x`` and, if it requires grad, to ``coef``.
    """
    if not x.is_floating_point():
        raise TypeError(f"pcp expects a floating-point tensor, got {x.dtype}")
    if coef.shape != (3, 4):
        raise ValueError(f"PCP coefficient table must have shape (3, 4), got {tuple(coef.shape)}")
    xl = x_L if isinstance(x_L, Tensor) else torch.tensor(float(x_L), dtype=torch.float64)
    return pcp_table(x, coef, xl.reshape(()), kernel=_kernel())


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
    once (float64, cached on the CPU for every input device). ``learnable=True``: ``x_L``, ``P1`` and ``s_L`` are
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
        if not self.learnable:
            # the fixed table as Python numbers: torch.compile bakes them into the graph as
            # constants made on the input's device (no CPU arithmetic inside a CUDA graph)
            self._fixed_rows = tuple(map(tuple, _fixed_table(*self._fixed)[0].tolist()))
        else:
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
            if torch.compiler.is_compiling():
                f64 = dict(dtype=torch.float64, device=x.device)
                coef = torch.tensor(self._fixed_rows, **f64)
                return pcp_from_coefficients(x, coef, torch.tensor(self._fixed[0], **f64))
            coef, xl = _fixed_table(*self._fixed)
            return pcp_from_coefficients(x, coef, xl)
        x_l, p1, s_l = self._clamped()
        coef = coefficients(x_l, p1, s_l)
        if x.is_cuda and not torch.compiler.is_compiling():
            # parameters stay on the GPU: truncated-power form, fused kernels, no sync
            return pcp_spline(x, spline_parameters(coef, x_l), kernel=_kernel())
        return pcp_from_coefficients(x, coef, x_l)

    def extra_repr(self) -> str:
        if self.learnable:
            p = {n: float(getattr(self, n).detach()) for n in ("x_L", "P1", "s_L")}
        else:
            p = self.effective_parameters()
        return (
            f"x_L={p['x_L']:.4g}, P1={p['P1']:.4g}, s_L={p['s_L']:.4g}, learnable={self.learnable}"
        )
