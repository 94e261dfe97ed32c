"""SymPy derivation of the PCP activation of §3.4 (eqs. 6-12).

Not on the training path: :mod:`cfdan.pcp` holds hand-written closed forms of what is
derived here, and the tests check that the two agree.

Contents: the Hermite basis (eq. 8) and pieces (eq. 7), the C2 system (eq. 9) solved for
``P3`` and ``dP3/dx(x_L)``, the closed forms of the 12 coefficients of eq. (11),
continuity checks at every knot (including -1 and 1 against the constant extensions of
eq. 10), LaTeX helpers for the notebook and operation counts of eq. (12) vs eqs. (7)-(8).
"""

from __future__ import annotations

import ast
import functools
from collections import Counter
from dataclasses import dataclass

import numpy as np
import sympy as sp

__all__ = [
    "ContinuityCheck",
    "Symbols",
    "closed_form_coefficients",
    "coefficient_function",
    "continuity_report",
    "count_ops",
    "eq8_op_count",
    "hermite_basis",
    "hermite_piece",
    "horner_op_count",
    "latex_basis",
    "latex_coefficients",
    "latex_pieces",
    "latex_solution",
    "piece_derivatives",
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


def piece_derivatives(order: int) -> tuple[sp.Expr, ...]:
    """``d^order/dx^order`` of each solved piece."""
    x = symbols().x
    return tuple(sp.diff(p, x, order) for p in pieces())


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


# --------------------------------------------------------------------------- op counts
_OP_NAMES = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div"}


def count_ops(code: str) -> dict[str, int]:
    """Arithmetic operations in straight-line Python code (statements or one expression).

    ``a**k`` with integer k >= 2 counts as k - 1 multiplications; unary minus as a
    subtraction. Each written operation counts once (no common-subexpression sharing
    beyond what the code itself names).
    """
    counts: Counter[str] = Counter()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.Pow):
                k = node.right
                if not (isinstance(k, ast.Constant) and isinstance(k.value, int) and k.value >= 2):
                    raise ValueError(f"count_ops: unsupported power in {ast.unparse(node)!r}")
                counts["mul"] += k.value - 1
            else:
                counts[_OP_NAMES[type(node.op)]] += 1
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            counts["sub"] += 1
    return {k: counts.get(k, 0) for k in ("add", "sub", "mul", "div")}


#: Eq. (12) for one piece.
HORNER_CODE = "((a * x + b) * x + c) * x + d"

#: Eqs. (7)-(8) for one piece, written as in the paper with the obvious shared terms
#: (h, x_{i+1} - x, x - x_i) named once.
EQ8_CODE = """
h = x1 - x0
r = x1 - x
l = x - x0
F0 = r**2 * (2 * l + h) / h**3
F1 = l**2 * (2 * r + h) / h**3
G0 = r**2 * l / h**2
G1 = -(l**2) * r / h**2
P = F0 * f0 + G0 * m0 + F1 * f1 + G1 * m1
"""


def horner_op_count() -> dict[str, int]:
    """Operations of eq. (12) per element (3 mul + 3 add), piece selection excluded."""
    return count_ops(HORNER_CODE)


def eq8_op_count() -> dict[str, int]:
    """Operations of eqs. (7)-(8) per element for one piece, as written in :data:`EQ8_CODE`."""
    return count_ops(EQ8_CODE)


# --------------------------------------------------------------------------- numeric analysis
# Used by notebooks/01_pcp_activation.ipynb to check the paper's claims about PCP (§4.4).
def _table(x_L: float, P1: float, s_L: float) -> np.ndarray:
    from cfdan.pcp import coefficients, validate_parameters

    validate_parameters(x_L, P1, s_L)
    return coefficients(x_L, P1, s_L).numpy()


def _intervals(x_L: float) -> list[tuple[float, float]]:
    return [(-1.0, 0.0), (0.0, x_L), (x_L, 1.0)]


def pcp_derivative(x, order: int = 0, x_L: float = 0.19, P1: float = -0.24, s_L: float = 1.85):
    """``d^order PCP / dx^order`` (order 0-3) evaluated piecewise from eq. (11), float64 NumPy.

    Outside [-1, 1] every derivative is 0 (constant extensions of eq. 10); at the knots the
    right-hand piece is used, as in eq. (10).
    """
    if order not in (0, 1, 2, 3):
        raise ValueError(f"pcp_derivative: order must be 0..3, got {order}")
    x = np.asarray(x, dtype=np.float64)
    k = _table(x_L, P1, s_L)
    polys = [np.polyder(np.poly1d(row), order) for row in k]
    out = np.select(
        [x < 0, x < x_L],
        [polys[0](x), polys[1](x)],
        default=polys[2](x),
    )
    outside = [P1, 1.0] if order == 0 else [0.0, 0.0]
    out = np.where(x < -1, outside[0], out)
    return np.where(x > 1, outside[1], out)


def extrema(
    order: int = 0, x_L: float = 0.19, P1: float = -0.24, s_L: float = 1.85
) -> dict[str, float]:
    """Exact min / max over the real line of ``d^order PCP / dx^order`` (order 0, 1 or 2).

    Candidates: the stationary points of each piece inside its interval, the interval ends
    (one-sided limits, so jumps of the second derivative at -1 / 1 are seen), and the
    constants outside [-1, 1].
    """
    k = _table(x_L, P1, s_L)
    # the constants of eq. (10), reported at the knot where they start
    cands: list[tuple[float, float]] = [(-1.0, P1 if order == 0 else 0.0)]
    cands.append((1.0, 1.0 if order == 0 else 0.0))
    for row, (lo, hi) in zip(k, _intervals(x_L), strict=True):
        p = np.polyder(np.poly1d(row), order)
        pts = [lo, hi]
        if p.order >= 1:
            pts += [float(r.real) for r in np.polyder(p).roots if abs(r.imag) < 1e-12]
        cands += [(t, float(p(t))) for t in pts if lo <= t <= hi]
    tmin, vmin = min(cands, key=lambda c: c[1])
    tmax, vmax = max(cands, key=lambda c: c[1])
    return {"min": vmin, "argmin": tmin, "max": vmax, "argmax": tmax}


def activation_curves(x, x_L: float = 0.19, P1: float = -0.24, s_L: float = 1.85):
    """Long DataFrame (activation, order, x, value) for Fig. 9: PCP, Sigmoid, ReLU, Tanh and
    their first and second derivatives (analytic; ReLU's second derivative is 0 away from
    0, where it does not exist)."""
    import pandas as pd

    x = np.asarray(x, dtype=np.float64)
    s = 1 / (1 + np.exp(-x))
    th = np.tanh(x)
    curves = {
        "PCP": [pcp_derivative(x, o, x_L, P1, s_L) for o in (0, 1, 2)],
        "Sigmoid": [s, s * (1 - s), s * (1 - s) * (1 - 2 * s)],
        "ReLU": [np.maximum(x, 0), (x > 0).astype(float), np.zeros_like(x)],
        "Tanh": [th, 1 - th**2, -2 * th * (1 - th**2)],
    }
    frames = [
        pd.DataFrame({"activation": name, "order": o, "x": x, "value": v})
        for name, vals in curves.items()
        for o, v in enumerate(vals)
    ]
    return pd.concat(frames, ignore_index=True)


def check_claims(x_L: float = 0.19, P1: float = -0.24, s_L: float = 1.85):
    """The paper's analytic claims about PCP (§3.4, §4.4) checked for one parameter set.

    Returns a DataFrame (claim, source, computed, holds). Timing claims are separate
    (:func:`speed_claims`), since they depend on the machine.
    """
    import pandas as pd

    rng = extrema(0, x_L, P1, s_L)
    d1 = extrema(1, x_L, P1, s_L)
    sig_max = 0.25  # sigmoid'(0) = 1/4 is the maximum of s (1 - s)
    rows = [
        (
            "values lie in [P1, 1] ('between a small negative number and 1')",
            "§4.4",
            f"min {rng['min']:.6f} at x = {rng['argmin']:.4f}, max {rng['max']:.6f}"
            f" at x = {rng['argmax']:.4f}",
            rng["min"] >= P1 - 1e-12 and rng["max"] <= 1 + 1e-12,
        ),
        (
            "gradient between 0 and 1.5",
            "§4.4",
            f"min {d1['min']:.6f}, max {d1['max']:.6f} at x = {d1['argmax']:.4f}",
            d1["min"] >= -1e-12 and d1["max"] <= 1.5,
        ),
        (
            "Sigmoid gradients all below 0.25",
            "§4.4",
            f"max of s(1-s) = {sig_max:.6f}, attained at x = 0 (so <= 0.25)",
            True,
        ),
    ]
    jumps = {(c.knot, c.order): c for c in continuity_report()}
    for order, label in ((0, "C0"), (1, "C1"), (2, "C2")):
        bad = [
            f"{kn}: jump {jumps[(kn, order)].jump_at(x_L, P1, s_L):+.6f}"
            for kn in ("-1", "0", "x_L", "1")
            if abs(jumps[(kn, order)].jump_at(x_L, P1, s_L)) > 1e-12
        ]
        claim = {
            "C0": "continuous at all points",
            "C1": "continuously differentiable at all points (§4.4)",
            "C2": "C2 continuous at all points (§3.4, 'PCP(x) is C2 continuous')",
        }[label]
        computed = "; ".join(bad) if bad else "no jump at -1, 0, x_L, 1"
        rows.append((claim, "§3.4/§4.4", computed, not bad))
    horner, eq8 = horner_op_count(), eq8_op_count()
    rows.extend(
        [
            (
                "eq. (12) needs 3 multiplications and 3 additions per piece",
                "§3.4",
                f"Horner: {horner['mul']} mul, {horner['add']} add; plus piece selection "
                "(2 comparisons against 0 and x_L, 2 for the clamp to [-1, 1])",
                horner["mul"] == 3 and horner["add"] == 3,
            ),
            (
                "eqs. (7)-(8) need 4 div, 17 mul, 4 sub, 3 add",
                "§3.4",
                f"as written in EQ8_CODE (h, x_(i+1)-x, x-x_i shared): {eq8['div']} div, "
                f"{eq8['mul']} mul, {eq8['sub']} sub, {eq8['add']} add (the count depends on "
                "which subexpressions are shared; either way far more than eq. (12))",
                (eq8["div"], eq8["mul"], eq8["sub"], eq8["add"]) == (4, 17, 4, 3),
            ),
        ]
    )
    rows.append(
        (
            "no exponentiation (unlike Sigmoid, Tanh)",
            "§3.4/§4.4",
            "polynomial pieces and comparisons only",
            True,
        )
    )
    rows.append(
        (
            "solves ReLU's neuron death (non-zero gradient for negative inputs)",
            "§3.4/§4.4",
            f"gradient > 0 on (-1, 0); exactly 0 for x < -1 and x > 1 "
            f"(PCP'(-1.5) = {pcp_derivative(-1.5, 1, x_L, P1, s_L):.1f})",
            False,
        )
    )
    return pd.DataFrame(rows, columns=["claim", "paper", "computed", "holds"])


def speed_claims(timings):
    """'Faster than Sigmoid and Tanh' (§4.4) from a :func:`cfdan.pcp_bench.benchmark_activations`
    table: per PCP mode and pass, the time ratios PCP / Sigmoid and PCP / Tanh, the
    references being the eager built-in ops when they were timed (else the same mode)."""
    import pandas as pd

    rows = []
    for mode, g in timings.groupby("mode", sort=False):
        ref_mode = "eager" if (timings["mode"] == "eager").any() else mode
        ref = timings[timings["mode"] == ref_mode].set_index("activation")
        t = g.set_index("activation")
        if "PCP" not in t.index or not {"Sigmoid", "Tanh"} <= set(ref.index):
            continue
        for col, label in (("fwd_ms", "forward"), ("fwd_bwd_ms", "forward+backward")):
            r_s = t.loc["PCP", col] / ref.loc["Sigmoid", col]
            r_t = t.loc["PCP", col] / ref.loc["Tanh", col]
            rows.append(
                {
                    "PCP mode": mode,
                    "reference mode": ref_mode,
                    "pass": label,
                    "PCP / Sigmoid": r_s,
                    "PCP / Tanh": r_t,
                    "faster than both": bool(r_s < 1 and r_t < 1),
                }
            )
    return pd.DataFrame(rows)
