"""The paper's claims about PCP (§3.4, §4.4), checked; every verdict is computed.

Used by ``notebooks/01_pcp_activation.ipynb``. :func:`check_claims` derives its verdicts
from the coefficient table of eq. (11) (exact extrema of each cubic piece), the SymPy
derivation (:mod:`cfdan.pcp.symbolic`: jumps at the knots, polynomial pieces, the maximum of
Sigmoid's gradient), operation counts of eq. (12) and eqs. (7)-(8), and the implementation
itself (autograd gradients, the torch functions its forward calls). :func:`speed_claims`
reads a timing table of :func:`cfdan.pcp.bench.benchmark_activations`.

Kept apart from :mod:`cfdan.analysis.tables`, whose tables come from the results store only.
"""

from __future__ import annotations

import ast
from collections import Counter
from collections.abc import Callable

import numpy as np
import pandas as pd
import sympy as sp
import torch
from torch.overrides import TorchFunctionMode, resolve_name

from cfdan.pcp import (
    DEFAULT_P1,
    DEFAULT_S_L,
    DEFAULT_X_L,
    PCP,
    coefficients,
    pcp,
    symbolic,
    validate_parameters,
)

__all__ = [
    "EQ8_CODE",
    "HORNER_CODE",
    "activation_curves",
    "check_claims",
    "count_ops",
    "eq8_op_count",
    "exponential_calls",
    "extrema",
    "horner_op_count",
    "pcp_derivative",
    "sigmoid_gradient_max",
    "speed_claims",
    "torch_calls",
]


# --------------------------------------------------------------------------- derivatives
def _table(x_L: float, P1: float, s_L: float) -> np.ndarray:
    validate_parameters(x_L, P1, s_L)
    return coefficients(x_L, P1, s_L).numpy()


def pcp_derivative(
    x, order: int = 0, x_L: float = DEFAULT_X_L, P1: float = DEFAULT_P1, s_L: float = DEFAULT_S_L
) -> np.ndarray:
    """``d^order PCP / dx^order`` (order 0-3) evaluated piecewise from eq. (11), float64 NumPy.

    Outside [-1, 1] every derivative is 0 (constant extensions of eq. 10); at the knots the
    right-hand piece is used, as in eq. (10).
    """
    if order not in (0, 1, 2, 3):
        raise ValueError(f"pcp_derivative: order must be 0..3, got {order}")
    x = np.asarray(x, dtype=np.float64)
    k = _table(x_L, P1, s_L)
    polys = [np.polyder(np.poly1d(row), order) for row in k]
    out = np.select([x < 0, x < x_L], [polys[0](x), polys[1](x)], default=polys[2](x))
    outside = [P1, 1.0] if order == 0 else [0.0, 0.0]
    out = np.where(x < -1, outside[0], out)
    return np.where(x > 1, outside[1], out)


def extrema(
    order: int = 0, x_L: float = DEFAULT_X_L, P1: float = DEFAULT_P1, s_L: float = DEFAULT_S_L
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
    for row, (lo, hi) in zip(k, [(-1.0, 0.0), (0.0, x_L), (x_L, 1.0)], strict=True):
        p = np.polyder(np.poly1d(row), order)
        pts = [lo, hi]
        if p.order >= 1:
            pts += [float(r.real) for r in np.polyder(p).roots if abs(r.imag) < 1e-12]
        cands += [(t, float(p(t))) for t in pts if lo <= t <= hi]
    tmin, vmin = min(cands, key=lambda c: c[1])
    tmax, vmax = max(cands, key=lambda c: c[1])
    return {"min": vmin, "argmin": tmin, "max": vmax, "argmax": tmax}


def activation_curves(
    x, x_L: float = DEFAULT_X_L, P1: float = DEFAULT_P1, s_L: float = DEFAULT_S_L
) -> pd.DataFrame:
    """Long DataFrame (activation, order, x, value) for Fig. 9: PCP, Sigmoid, ReLU, Tanh and
    their first and second derivatives (analytic; ReLU's second derivative is 0 away from
    0, where it does not exist)."""
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


def sigmoid_gradient_max() -> tuple[float, float]:
    """``(max, argmax)`` over the reals of Sigmoid'(x) = s (1 - s), derived with SymPy."""
    x = sp.Symbol("x", real=True)
    grad = sp.diff(1 / (1 + sp.exp(-x)), x)
    (x0,) = sp.solve(sp.diff(grad, x), x)  # the only stationary point
    return float(sp.maximum(grad, x, sp.S.Reals)), float(x0)


# --------------------------------------------------------------------------- operations
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


class _CallRecorder(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.add(resolve_name(func) or repr(func))
        return func(*args, **(kwargs or {}))


def torch_calls(fn: Callable[[torch.Tensor], object], x: torch.Tensor) -> set[str]:
    """Names of the torch functions and Tensor methods that ``fn(x)`` calls (the forward;
    the autograd engine runs a backward outside this recording)."""
    with _CallRecorder() as rec:
        fn(x)
    return rec.names


_EXPONENTIAL = frozenset(
    "exp exp2 expm1 log log1p log2 log10 pow rpow float_power sigmoid tanh erf softplus".split()
)


def exponential_calls(fn: Callable[[torch.Tensor], object], x: torch.Tensor) -> list[str]:
    """The exponential-type calls (exp, log, pow, sigmoid, tanh, ...) among :func:`torch_calls`."""
    return sorted(n for n in torch_calls(fn, x) if n.rsplit(".", 1)[-1].strip("_") in _EXPONENTIAL)


# --------------------------------------------------------------------------- claims
def _continuity_rows(x_L: float, P1: float, s_L: float) -> list[tuple[str, str, str, bool]]:
    jumps = {(c.knot, c.order): c.jump_at(x_L, P1, s_L) for c in symbolic.continuity_report()}
    claims = (
        "continuous at all points",
        "continuously differentiable at all points (§4.4)",
        "C2 continuous at all points (§3.4, 'PCP(x) is C2 continuous')",
    )
    rows = []
    for order, claim in enumerate(claims):
        bad = [
            f"{kn}: jump {jumps[(kn, order)]:+.6f}"
            for kn in ("-1", "0", "x_L", "1")
            if abs(jumps[(kn, order)]) > 1e-12
        ]
        computed = "; ".join(bad) if bad else "no jump at -1, 0, x_L, 1"
        rows.append((claim, "§3.4/§4.4", computed, not bad))
    return rows


def _operation_rows() -> list[tuple[str, str, str, bool]]:
    horner, eq8 = horner_op_count(), eq8_op_count()
    return [
        (
            "eq. (12) needs 3 multiplications and 3 additions per piece",
            "§3.4",
            f"Horner: {horner['mul']} mul, {horner['add']} add; plus piece selection "
            "(2 comparisons against 0 and x_L, 2 for the clamp to [-1, 1])",
            horner["mul"] == 3 and horner["add"] == 3,
        ),
        (
            "the Hermite form costs far more than eq. (12) (paper: \"Equations 8 and 9 "
            "requires 4 divisions, 17 multiplications, 4 subtractions and 3 additions\"; "
            "we read this as eqs. (7)-(8))",
            "§3.4",
            f"as written in EQ8_CODE (h, x_(i+1)-x, x-x_i shared): {eq8['div']} div, "
            f"{eq8['mul']} mul, {eq8['sub']} sub, {eq8['add']} add against eq. (12)'s "
            f"{horner['mul']} mul, {horner['add']} add; the exact count depends on which "
            "subexpressions are shared, so the paper's 17 mul is neither confirmed nor refuted",
            eq8["div"] > 0 and eq8["mul"] > 2 * horner["mul"],
        ),
    ]


def _exponentiation_row(x_L: float, P1: float, s_L: float) -> tuple[str, str, str, bool]:
    polynomial = all(p.is_polynomial(symbolic.symbols().x) for p in symbolic.pieces())
    x = torch.linspace(-3.0, 3.0, 601)
    found = {
        name: exponential_calls(fn, x)
        for name, fn in (
            ("PCP", PCP(x_L, P1, s_L)),
            ("Sigmoid", torch.sigmoid),
            ("Tanh", torch.tanh),
        )
    }
    listed = "; ".join(f"{n}: {', '.join(v) or 'none'}" for n, v in found.items())
    computed = (
        f"pieces {'are' if polynomial else 'are not all'} polynomials in x (SymPy); "
        f"exponential-type torch calls in the forward: {listed}"
    )
    return (
        "no exponentiation (unlike Sigmoid, Tanh)",
        "§3.4/§4.4",
        computed,
        polynomial and not found["PCP"],
    )


def _neuron_death_row(x_L: float, P1: float, s_L: float) -> tuple[str, str, str, bool]:
    x = torch.linspace(-3.0, 0.0, 3001, dtype=torch.float64)[:-1].requires_grad_()
    (grad,) = torch.autograd.grad(pcp(x, x_L, P1, s_L).sum(), x)
    dead = x.detach()[grad == 0]
    where = "autograd on a grid over [-3, 0)"
    if dead.numel():
        edge = float(dead.max())
        right = grad[x.detach() > edge]
        tail = f"; to its right min PCP' = {float(right.min()):.6f}" if right.numel() else ""
        computed = (
            f"{where}: PCP'(x) = 0 at {dead.numel()} of {x.numel()} points, the largest "
            f"x = {edge:.3f}{tail}"
        )
    else:
        computed = f"{where}: PCP'(x) != 0 at all {x.numel()} points"
    return (
        "solves ReLU's neuron death (non-zero gradient for negative inputs)",
        "§3.4/§4.4",
        computed,
        dead.numel() == 0,
    )


def check_claims(
    x_L: float = DEFAULT_X_L, P1: float = DEFAULT_P1, s_L: float = DEFAULT_S_L
) -> pd.DataFrame:
    """The paper's analytic claims about PCP (§3.4, §4.4) checked for one parameter set.

    Returns a DataFrame (claim, paper, computed, holds). Timing claims are separate
    (:func:`speed_claims`), since they depend on the machine.
    """
    rng = extrema(0, x_L, P1, s_L)
    d1 = extrema(1, x_L, P1, s_L)
    sig_max, sig_at = sigmoid_gradient_max()
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
            "Sigmoid gradients at most 0.25 ('all less than 0.25')",
            "§4.4",
            f"max of s(1-s) = {sig_max:.6f}, attained at x = {sig_at:g} (SymPy)",
            sig_max <= 0.25,
        ),
        *_continuity_rows(x_L, P1, s_L),
        *_operation_rows(),
        _exponentiation_row(x_L, P1, s_L),
        _neuron_death_row(x_L, P1, s_L),
    ]
    return pd.DataFrame(rows, columns=["claim", "paper", "computed", "holds"])


def timing_faults(timings: pd.DataFrame) -> pd.DataFrame:
    """The rows of a :func:`cfdan.pcp.bench.benchmark_activations` table that show the run was
    disturbed: a forward+backward pass contains the forward, so timing it faster than the
    forward alone (beyond 10 %) cannot be (a busy machine, or the allocator faulting in fresh
    pages for some calls and not others); such a run's ratios are not evidence. Columns
    activation, mode, fwd_ms, fwd_bwd_ms; empty for a consistent run."""
    ok = timings["status"] == "ok"
    bad = timings[ok & (timings["fwd_bwd_ms"] < 0.9 * timings["fwd_ms"])]
    return bad[["activation", "mode", "fwd_ms", "fwd_bwd_ms"]].reset_index(drop=True)


def speed_claims(timings: pd.DataFrame) -> pd.DataFrame:
    """'Faster than Sigmoid and Tanh' (§4.4) from a :func:`cfdan.pcp.bench.benchmark_activations`
    table: per PCP mode and pass, the time ratios PCP / Sigmoid and PCP / Tanh, the
    references being the eager built-in ops when they were timed (else the same mode). A table
    without Tanh gives NaN there, and "faster than both" is None unless Sigmoid alone settles
    it (False)."""
    rows = []
    for mode, g in timings.groupby("mode", sort=False):
        ref_mode = "eager" if (timings["mode"] == "eager").any() else mode
        ref = timings[timings["mode"] == ref_mode].set_index("activation")
        t = g.set_index("activation")
        if "PCP" not in t.index or "Sigmoid" not in ref.index:
            continue
        for col, label in (("fwd_ms", "forward"), ("fwd_bwd_ms", "forward+backward")):
            r_s = t.loc["PCP", col] / ref.loc["Sigmoid", col]
            r_t = t.loc["PCP", col] / ref.loc["Tanh", col] if "Tanh" in ref.index \
                else float("nan")
            rows.append(
                {
                    "PCP mode": mode,
                    "reference mode": ref_mode,
                    "pass": label,
                    "PCP / Sigmoid": r_s,
                    "PCP / Tanh": r_t,
                    "faster than both": (False if r_s >= 1 else
                                         None if r_t != r_t else bool(r_t < 1)),
                }
            )
    return pd.DataFrame(rows)


# ---- the committed GPU benchmark beside this machine's
def stored_benchmarks(folder: str | None = None) -> pd.DataFrame:
    """The committed outputs of ``benchmarks/bench_activations.py`` on lent GPUs
    (``results/benchmarks/pcp_*_call*.csv`` with their ``.json`` checks), one row per
    activation x mode x call, labelled with the hardware and torch version that measured them."""
    import json
    from pathlib import Path

    from cfdan import paths

    base = Path(folder) if folder else paths.results_dir() / "benchmarks"
    frames = []
    for csv in sorted(base.glob("pcp_*_call*.csv")):
        meta_path = csv.with_suffix(".json")
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        df = pd.read_csv(csv)
        df.insert(0, "hardware", str(meta.get("device", csv.stem.split("_")[1])))
        df.insert(1, "torch", str(meta.get("torch", "?")))
        df.insert(2, "call", csv.stem.rsplit("_", 1)[-1])
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def stored_speed_claims(stored: pd.DataFrame | None = None) -> pd.DataFrame:
    """:func:`speed_claims` of each stored GPU call (:func:`stored_benchmarks`), labelled with
    its hardware and call: the same verdict the CPU run gets, on the GPU's own timings."""
    stored = stored_benchmarks() if stored is None else stored
    frames = []
    for (hw, call), g in stored.groupby(["hardware", "call"], sort=True) if len(stored) else []:
        got = speed_claims(g.reset_index(drop=True))
        if not got.empty:
            frames.append(got.assign(hardware=hw, call=call)[
                ["hardware", "call", *got.columns]])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def speed_beside_stored(timings: pd.DataFrame, stored: pd.DataFrame | None = None,
                        ratio: str = "fwd_bwd_vs_relu") -> pd.DataFrame:
    """``ratio`` (default: forward+backward time relative to ReLU) per activation and mode, on
    this machine (``timings`` from :func:`cfdan.pcp.bench.benchmark_activations`) beside
    each stored GPU call; columns are labelled with their hardware."""
    stored = stored_benchmarks() if stored is None else stored
    here = timings.attrs.get("device", "this machine")
    cols = {f"{here} (this run)": timings.set_index(["activation", "mode"])[ratio]}
    for (hw, call), g in stored.groupby(["hardware", "call"], sort=True) if len(stored) else []:
        cols[f"{hw} ({call})"] = g.set_index(["activation", "mode"])[ratio]
    return pd.DataFrame(cols)
