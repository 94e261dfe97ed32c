"""SymPy derivation of the PCP activation of §3.4 (eqs. 6-12).

Not on the training path: :mod:`cfdan.pcp` holds hand-written closed forms of what is
derived here, and the tests check that the two agree.

Contents: the Hermite basis (eq. 8) and pieces (eq. 7), the C2 system (eq. 9) solved for
``P3`` and ``dP3/dx(x_L)``, the closed forms of the 12 coefficients of eq. (11),
continuity checks at every knot (including -1 and 1 against the constant extensions of
eq. 10) and LaTeX helpers for the notebook. The numerical checks of the paper's claims
built on it are in :mod:`cfdan.pcp.report`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import sympy as sp

__all__ = [
    "ContinuityCheck",
    "Symbols",
    "closed_form_coefficients",
    "coefficient_function",
    "continuity_report",
    "hermite_basis",
    "hermite_piece",
    "latex_basis",
    "latex_coefficients",
    "latex_pieces",
    "latex_solution",
    "pieces",
    "solve_knot",
    "symbols",
    "unsolved_pieces",
]


@dataclass(frozen=True)
class Symbols:
    """The symbols of §3.4: input x, shape parameters and the two unknowns of eq. (9)."""

    x: sp.Symbol
    x_L: sp.Symbol
    P1: sp.Symbol
    s_L: sp.Symbol
    P3: sp.Symbol
    m3: sp.Symbol  # dP3/dx at x_L


@functools.cache
def symbols() -> Symbols:
    """Real symbols ``x, x_L, P_1, s_L, P_3, m_3``."""
    x, x_L, P1, s_L, P3, m3 = sp.symbols("x x_L P_1 s_L P_3 m_3", real=True)
    return Symbols(x, x_L, P1, s_L, P3, m3)


def hermite_basis(x: sp.Expr, x_i: sp.Expr, x_next: sp.Expr) -> tuple[sp.Expr, ...]:
    """``(F0, F1, G0, G1)`` of eq. (8) on the interval ``[x_i, x_next]``."""
    h = x_next - x_i
    F0 = (x_next - x) ** 2 * (2 * (x - x_i) + h) / h**3
    F1 = (x - x_i) ** 2 * (2 * (x_next - x) + h) / h**3
    G0 = (x_next - x) ** 2 * (x - x_i) / h**2
    G1 = -((x - x_i) ** 2) * (x_next - x) / h**2
    return F0, F1, G0, G1


def hermite_piece(x, x_i, x_next, f_i, m_i, f_next, m_next) -> sp.Expr:
    """Eq. (7): the cubic with values ``f_i, f_next`` and slopes ``m_i, m_next`` at the ends."""
    F0, F1, G0, G1 = hermite_basis(x, x_i, x_next)
    return F0 * f_i + G0 * m_i + F1 * f_next + G1 * m_next


def _knot_data(s: Symbols) -> list[tuple]:
    """(x_i, x_next, f_i, m_i, f_next, m_next) of the three intervals, eq. (6) for m at 0."""
    m0 = s.s_L * (0 - s.P1) / (0 - (-1))  # eq. (6): dP2/dx = s_L (P2 - P1) / (x2 - x1)
    return [
        (-1, 0, s.P1, 0, 0, m0),
        (0, s.x_L, 0, m0, s.P3, s.m3),
        (s.x_L, 1, s.P3, s.m3, 1, 0),
    ]


def unsolved_pieces() -> list[sp.Expr]:
    """The three pieces of eq. (7), still in the unknowns ``P3`` and ``m3``."""
    s = symbols()
    return [hermite_piece(s.x, *k) for k in _knot_data(s)]


@functools.cache
def solve_knot() -> dict[sp.Symbol, sp.Expr]:
    """Eq. (9) solved: ``{P3: ..., m3: ...}`` such that PCP'' is continuous at 0 and x_L."""
    s = symbols()
    p1, p2, p3 = unsolved_pieces()
    d2 = [sp.diff(p, s.x, 2) for p in (p1, p2, p3)]
    eqs = [
        sp.Eq(d2[1].subs(s.x, 0), d2[0].subs(s.x, 0)),
        sp.Eq(d2[1].subs(s.x, s.x_L), d2[2].subs(s.x, s.x_L)),
    ]
    (sol,) = sp.solve(eqs, [s.P3, s.m3], dict=True)
    return {k: sp.factor(v) for k, v in sol.items()}


@functools.cache
def pieces() -> tuple[sp.Expr, sp.Expr, sp.Expr]:
    """The three solved pieces on [-1, 0), [0, x_L), [x_L, 1] as polynomials in x."""
    sol = solve_knot()
    return tuple(sp.expand(p.subs(sol)) for p in unsolved_pieces())


@functools.cache
def closed_form_coefficients() -> sp.Matrix:
    """(3, 4) matrix of the (a, b, c, d) of eq. (11) per piece, factored, in (x_L, P1, s_L)."""
    x = symbols().x
    rows = []
    for p in pieces():
        poly = sp.Poly(p, x)
        coeffs = [poly.coeff_monomial(x**k) for k in (3, 2, 1, 0)]
        rows.append([sp.factor(sp.simplify(c)) for c in coeffs])
    return sp.Matrix(rows)


def coefficient_function():
    """NumPy function ``f(x_L, P1, s_L) -> (3, 4) array`` of the closed forms (for tests)."""
    s = symbols()
    return sp.lambdify((s.x_L, s.P1, s.s_L), closed_form_coefficients(), modules="numpy")


# --------------------------------------------------------------------------- continuity
@dataclass(frozen=True)
class ContinuityCheck:
    """Jump of the ``order``-th derivative at ``knot`` between the left and right pieces."""

    knot: str
    order: int
    left: str
    right: str
    jump: sp.Expr  # right - left, simplified; 0 means continuous for all parameters

    @property
    def holds(self) -> bool:
        """True when the jump vanishes identically in (x_L, P1, s_L)."""
        return sp.simplify(self.jump) == 0

    def jump_at(self, x_L: float, P1: float, s_L: float) -> float:
        s = symbols()
        return float(self.jump.subs({s.x_L: x_L, s.P1: P1, s.s_L: s_L}))

    def vanishes_when(self) -> list:
        """Solutions of ``jump = 0`` for s_L (or P1), e.g. ``[3]`` for C2 at -1."""
        s = symbols()
        for var in (s.s_L, s.P1, s.x_L):
            if self.jump.has(var):
                return sp.solve(sp.Eq(self.jump, 0), var)
        return []


@functools.cache
def continuity_report() -> tuple[ContinuityCheck, ...]:
    """C0/C1/C2 checks at x = -1, 0, x_L, 1 (outer knots against the constants P1 and 1).

    Result: C0 and C1 hold everywhere (slopes 0 at -1 and 1 by construction); C2 holds at
    0 and x_L (imposed by eq. 9) but NOT at -1 and 1 in general, because the constant
    extensions of eq. (10) have zero second derivative while the end pieces do not.
    """
    s = symbols()
    x = s.x
    p1, p2, p3 = pieces()
    left_const, right_const = s.P1 + 0 * x, sp.Integer(1) + 0 * x
    knots = [
        ("-1", -1, ("constant P1", left_const), ("piece 1", p1)),
        ("0", 0, ("piece 1", p1), ("piece 2", p2)),
        ("x_L", s.x_L, ("piece 2", p2), ("piece 3", p3)),
        ("1", 1, ("piece 3", p3), ("constant 1", right_const)),
    ]
    checks = []
    for name, at, (ln, left), (rn, right) in knots:
        for order in (0, 1, 2):
            jump = sp.diff(right, x, order).subs(x, at) - sp.diff(left, x, order).subs(x, at)
            checks.append(ContinuityCheck(name, order, ln, rn, sp.factor(sp.simplify(jump))))
    return tuple(checks)


# --------------------------------------------------------------------------- LaTeX
def latex_basis() -> str:
    """Eq. (8) as LaTeX (aligned)."""
    x, xi, xn = sp.symbols("x x_i x_{i+1}", real=True)
    names = ("F_0", "F_1", "G_0", "G_1")
    lines = [
        f"{n}(x) &= {sp.latex(e)}" for n, e in zip(names, hermite_basis(x, xi, xn), strict=True)
    ]
    return "\\begin{aligned}\n" + " \\\\\n".join(lines) + "\n\\end{aligned}"


def latex_solution() -> str:
    """Eq. (9) solved, as LaTeX."""
    s = symbols()
    sol = solve_knot()
    return (
        "\\begin{aligned}\n"
        f"P_3 &= {sp.latex(sol[s.P3])} \\\\\n"
        f"\\frac{{dP_3}}{{dx}}(x_L) &= {sp.latex(sol[s.m3])}\n"
        "\\end{aligned}"
    )


def latex_pieces() -> str:
    """Eq. (10) with the solved pieces as a LaTeX cases environment."""
    s = symbols()
    x = s.x
    body = [
        "P_1 & x < -1",
        f"{sp.latex(sp.collect(pieces()[0], x))} & -1 \\le x < 0",
        f"{sp.latex(sp.collect(pieces()[1], x))} & 0 \\le x < x_L",
        f"{sp.latex(sp.collect(pieces()[2], x))} & x_L \\le x \\le 1",
        "1 & x > 1",
    ]
    return "PCP(x) = \\begin{cases} " + " \\\\ ".join(body) + " \\end{cases}"


def latex_coefficients() -> str:
    """The 12 closed-form coefficients of eq. (11) as a LaTeX array."""
    m = closed_form_coefficients()
    rows = ["\\text{piece} & a & b & c & d"]
    labels = ("[-1, 0)", "[0, x_L)", "[x_L, 1]")
    for i, lab in enumerate(labels):
        rows.append(f"{lab} & " + " & ".join(sp.latex(m[i, j]) for j in range(4)))
    return "\\begin{array}{l|llll}\n" + " \\\\ \\hline\n".join(rows) + "\n\\end{array}"
