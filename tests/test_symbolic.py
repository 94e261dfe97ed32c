"""Tests of cfdan.pcp.symbolic (SymPy derivation of §3.4) against cfdan.pcp, and of the checks
of the paper's claims built on both (cfdan.pcp.report)."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
import torch

from cfdan.pcp import coefficients, knot_values, pcp
from cfdan.pcp import report as R
from cfdan.pcp import symbolic as S


def test_hermite_basis_interpolates():
    x, a, b = sp.symbols("x a b", real=True)
    F0, F1, G0, G1 = S.hermite_basis(x, a, b)
    values = {"F0": (1, 0, 0, 0), "F1": (0, 1, 0, 0), "G0": (0, 0, 1, 0), "G1": (0, 0, 0, 1)}
    for name, f in zip(("F0", "F1", "G0", "G1"), (F0, F1, G0, G1), strict=True):
        df = sp.diff(f, x)
        got = tuple(
            sp.simplify(e) for e in (f.subs(x, a), f.subs(x, b), df.subs(x, a), df.subs(x, b))
        )
        assert got == values[name]


def test_solution_satisfies_eq9():
    s = S.symbols()
    sol = S.solve_knot()
    p1, p2, p3 = (p.subs(sol) for p in S.unsolved_pieces())
    d2 = [sp.diff(p, s.x, 2) for p in (p1, p2, p3)]
    assert sp.simplify(d2[1].subs(s.x, 0) - d2[0].subs(s.x, 0)) == 0
    assert sp.simplify(d2[1].subs(s.x, s.x_L) - d2[2].subs(s.x, s.x_L)) == 0


def test_torch_closed_forms_equal_sympy():
    f = S.coefficient_function()
    s = S.symbols()
    sol = S.solve_knot()
    knot = sp.lambdify((s.x_L, s.P1, s.s_L), [sol[s.P3], sol[s.m3]], modules="math")
    rng = np.random.default_rng(0)
    for _ in range(200):
        x_L, P1, s_L = rng.uniform(0.02, 0.98), rng.uniform(-2.0, -1e-3), rng.uniform(1e-2, 5.0)
        ref = np.asarray(f(x_L, P1, s_L), dtype=np.float64)
        got = coefficients(x_L, P1, s_L).numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-11, atol=1e-11 * np.abs(ref).max())
        P3, m3 = (float(v) for v in knot_values(x_L, P1, s_L))
        P3_ref, m3_ref = knot(x_L, P1, s_L)
        assert P3 == pytest.approx(P3_ref, rel=1e-12, abs=1e-12)
        assert m3 == pytest.approx(m3_ref, rel=1e-12, abs=1e-12)


def test_pcp_values_equal_sympy_pieces():
    s = S.symbols()
    params = {s.x_L: 0.19, s.P1: -0.24, s.s_L: 1.85}
    fns = [sp.lambdify(s.x, p.subs(params), "numpy") for p in S.pieces()]
    x = np.linspace(-1, 1, 2001)
    ref = np.where(x < 0, fns[0](x), np.where(x < 0.19, fns[1](x), fns[2](x)))
    got = pcp(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-13)


def test_continuity_report():
    report = {(c.knot, c.order): c for c in S.continuity_report()}
    assert len(report) == 12
    for knot in ("-1", "0", "x_L", "1"):
        assert report[(knot, 0)].holds and report[(knot, 1)].holds
    assert report[("0", 2)].holds and report[("x_L", 2)].holds
    # the constant extensions have zero curvature, the end pieces do not
    assert not report[("-1", 2)].holds and not report[("1", 2)].holds
    s = S.symbols()
    assert sp.simplify(report[("-1", 2)].jump - 2 * s.P1 * (s.s_L - 3)) == 0
    assert report[("-1", 2)].vanishes_when() == [3]
    # numeric jump agrees with a finite difference of torch's second derivative
    eps = 1e-4
    x = torch.tensor([-1 + eps, -1 + 2 * eps, -1 + 3 * eps], dtype=torch.float64)
    y = pcp(x)
    curv = float((y[2] - 2 * y[1] + y[0]) / eps**2)
    assert curv == pytest.approx(report[("-1", 2)].jump_at(0.19, -0.24, 1.85), abs=1e-3)


def test_latex_helpers_render():
    for text in (S.latex_basis(), S.latex_solution(), S.latex_pieces(), S.latex_coefficients()):
        assert isinstance(text, str) and text.count("{") == text.count("}")
    assert "x_{L}" in S.latex_solution()


# ----------------------------------------------------------------------------- claims
def test_pcp_derivative_matches_torch():
    x = np.linspace(-1.6, 1.6, 3201)
    xt = torch.from_numpy(x).requires_grad_()
    y = pcp(xt)
    (g,) = torch.autograd.grad(y.sum(), xt)
    np.testing.assert_allclose(R.pcp_derivative(x, 0), y.detach().numpy(), atol=1e-13)
    np.testing.assert_allclose(R.pcp_derivative(x, 1), g.numpy(), atol=1e-12)
    # second derivative: finite difference of the first away from the knots
    h = 1e-6
    for x0 in (-0.7, -0.2, 0.1, 0.5, 0.9):
        fd = (R.pcp_derivative(x0 + h, 1) - R.pcp_derivative(x0 - h, 1)) / (2 * h)
        assert float(R.pcp_derivative(x0, 2)) == pytest.approx(float(fd), abs=1e-5)
    with pytest.raises(ValueError, match="order"):
        R.pcp_derivative(x, 4)


@pytest.mark.parametrize("params", [(0.19, -0.24, 1.85), (0.5, -0.6, 3.5), (0.8, -0.05, 0.5)])
def test_extrema_agree_with_dense_grid(params):
    x = np.linspace(-1.5, 1.5, 300001)
    for order in (0, 1):
        e = R.extrema(order, *params)
        v = R.pcp_derivative(x, order, *params)
        assert e["min"] == pytest.approx(v.min(), abs=1e-6)
        assert e["max"] == pytest.approx(v.max(), abs=1e-6)
        assert e["min"] <= v.min() + 1e-12 and e["max"] >= v.max() - 1e-12


def test_op_counts():
    assert R.horner_op_count() == {"add": 3, "sub": 0, "mul": 3, "div": 0}
    eq8 = R.eq8_op_count()
    assert eq8["div"] == 4 and eq8["mul"] > 3 * R.horner_op_count()["mul"]
    assert R.count_ops("-(a**3) / b") == {"add": 0, "sub": 1, "mul": 2, "div": 1}
    with pytest.raises(ValueError, match="unsupported power"):
        R.count_ops("a**b")


def test_sigmoid_gradient_max_is_a_quarter_at_zero():
    top, at = R.sigmoid_gradient_max()
    assert top == pytest.approx(0.25, abs=1e-15) and at == 0.0
    x = np.linspace(-10, 10, 20001)
    s = 1 / (1 + np.exp(-x))
    assert (s * (1 - s)).max() <= top + 1e-15


def test_exponential_calls_are_detected():
    x = torch.linspace(-2, 2, 11)
    assert R.exponential_calls(torch.sigmoid, x) == ["torch.sigmoid"]
    assert R.exponential_calls(lambda t: t.exp() + t**2.5, x) == [
        "torch.Tensor.__pow__",
        "torch.Tensor.exp",
    ]
    assert R.exponential_calls(lambda t: t * t + 1, x) == []
    assert "torch.Tensor.mul" in R.torch_calls(lambda t: t.mul(2), x)


def claims_by_name(*params) -> dict[str, tuple[str, bool]]:
    c = R.check_claims(*params)
    assert list(c.columns) == ["claim", "paper", "computed", "holds"]
    return {
        claim: (computed, holds)
        for claim, computed, holds in zip(c.claim, c.computed, c.holds, strict=True)
    }


def row(claims: dict[str, tuple[str, bool]], start: str) -> tuple[str, bool]:
    (key,) = (k for k in claims if k.startswith(start))
    return claims[key]


def test_check_claims_verdicts_at_paper_parameters():
    claims = claims_by_name()
    assert all(type(h) is bool for _, h in claims.values())
    assert row(claims, "values lie in")[1] and row(claims, "gradient between")[1]
    assert row(claims, "continuous at")[1] and row(claims, "continuously diff")[1]
    text, holds = row(claims, "C2")
    assert not holds and "-1: jump" in text and "1: jump" in text  # C2 fails at -1 and 1
    assert row(claims, "Sigmoid")[1] and "0.250000" in row(claims, "Sigmoid")[0]
    assert row(claims, "eq. (12)")[1]
    (hermite,) = (k for k in claims if k.startswith("the Hermite form"))
    assert "Equations 8 and 9" in hermite and "eqs. (7)-(8)" in hermite  # quoted; our reading
    text, holds = claims[hermite]
    assert holds and "neither confirmed nor refuted" in text  # the 17 mul depends on sharing
    text, holds = row(claims, "no exponentiation")
    assert holds and "PCP: none" in text and "Sigmoid: torch.sigmoid" in text
    text, holds = row(claims, "solves ReLU")
    assert not holds and "the largest x = -1.000" in text  # PCP' = 0 for every x <= -1


def test_check_claims_verdicts_follow_the_parameters():
    """The range and gradient verdicts are computed: a steep setting breaks both."""
    claims = claims_by_name(0.5, -0.9, 3.0)
    assert not row(claims, "values lie in")[1]
    assert not row(claims, "gradient between")[1]
    assert row(claims, "continuous at")[1]


def test_activation_curves():
    curves = R.activation_curves(np.linspace(-2, 2, 11))
    assert set(curves.activation) == {"PCP", "Sigmoid", "ReLU", "Tanh"}
    assert set(curves.order) == {0, 1, 2}
    sig1 = curves[(curves.activation == "Sigmoid") & (curves.order == 1)].value
    assert sig1.max() == pytest.approx(0.25)


def test_speed_claims_from_table():
    import pandas as pd

    t = pd.DataFrame(
        {
            "activation": ["PCP", "Sigmoid", "Tanh"],
            "mode": "eager",
            "fwd_ms": [1.0, 2.0, 3.0],
            "fwd_bwd_ms": [5.0, 2.0, 3.0],
        }
    )
    s = R.speed_claims(t)
    assert list(s["faster than both"]) == [True, False]
    assert s["PCP / Sigmoid"].tolist() == [0.5, 2.5]
    no_tanh = R.speed_claims(t[t["activation"] != "Tanh"])
    assert no_tanh["PCP / Sigmoid"].tolist() == [0.5, 2.5]
    assert no_tanh["PCP / Tanh"].isna().all()
    assert list(no_tanh["faster than both"]) == [None, False]  # slower than Sigmoid: settled
    stored = t.assign(hardware="GPU", call=["call1", "call1", "call1"])
    per_call = R.stored_speed_claims(pd.concat([stored, stored.assign(call="call2")]))
    assert list(per_call["call"]) == ["call1", "call1", "call2", "call2"]
    assert list(per_call["faster than both"]) == [True, False, True, False]


def test_stored_gpu_benchmarks_sit_beside_this_machine(tmp_path):
    import json

    import pandas as pd

    from cfdan.pcp import report as R

    rows = "activation,mode,fwd_ms,fwd_bwd_ms,fwd_vs_relu,fwd_bwd_vs_relu\n"
    (tmp_path / "pcp_gpu_call1.csv").write_text(rows + "PCP,eager,1,2,3,1.5\nReLU,eager,1,1,1,1\n")
    (tmp_path / "pcp_gpu_call1.json").write_text(json.dumps({"device": "Some GPU", "torch": "9"}))
    stored = R.stored_benchmarks(str(tmp_path))
    assert set(stored["hardware"]) == {"Some GPU"} and list(stored["call"]) == ["call1"] * 2
    here = pd.DataFrame({"activation": ["PCP", "ReLU"], "mode": ["eager"] * 2,
                         "fwd_bwd_vs_relu": [2.0, 1.0]})
    here.attrs["device"] = "cpu"
    side = R.speed_beside_stored(here, stored)
    assert list(side.columns) == ["cpu (this run)", "Some GPU (call1)"]
    assert side.loc[("PCP", "eager")].tolist() == [2.0, 1.5]
    assert not R.stored_benchmarks(str(tmp_path / "none")).shape[0]


def test_the_committed_h200_benchmarks_are_found():
    from cfdan.pcp import report as R

    stored = R.stored_benchmarks()
    assert len(stored) and stored["hardware"].str.contains("H200").all()


def test_timing_faults_flags_a_backward_faster_than_its_forward():
    import pandas as pd

    t = pd.DataFrame({"activation": ["PCP", "SiLU", "Tanh"], "mode": "eager",
                      "fwd_ms": [1.0, 1.2, 2.0], "fwd_bwd_ms": [3.0, 0.7, 1.9],
                      "status": "ok"})
    got = R.timing_faults(t)
    assert list(got["activation"]) == ["SiLU"]  # Tanh: 1.9 vs 2.0, within the 10 % allowance
    assert got.loc[0, "fwd_bwd_ms"] == 0.7 and got.loc[0, "fwd_ms"] == 1.2
    assert R.timing_faults(t[t["activation"] != "SiLU"]).empty
    failed = t.assign(status=["ok", "RuntimeError: x", "ok"])  # untimed rows are not read
    assert R.timing_faults(failed).empty
