"""The truncated-power form of a C2 PCP table (eqs. (9)-(12)), which the fast kernels evaluate.

A (3, 4) coefficient table that is C2 at 0 and x_L (what eq. (9) imposes) is the spline
``q(t) + alpha min(t, 0)^3 + k3 max(t - x_L, 0)^3`` with ``t = clamp(x, -1, 1)`` and ``q`` the
middle piece: seven numbers (:class:`Spline`). :mod:`cfdan.pcp.blocked` (CPU) and the CUDA
kernels of :mod:`cfdan.pcp.kernels` take it in this form.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["Spline", "remember_spline", "spline_form", "spline_parameters"]


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
