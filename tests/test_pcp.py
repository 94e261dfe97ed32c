"""Tests of cfdan.pcp: the PCP activation of §3.4 (eqs. 6-12)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cfdan.pcp import PCP, coefficients, pcp, pcp_from_coefficients
from cfdan.pcp import activation as P
from cfdan.pcp import kernels as K

DEFAULTS = (0.19, -0.24, 1.85)


def horner_reference(x: torch.Tensor, coef: torch.Tensor, x_L: float) -> torch.Tensor:
    """Eq. (10) evaluated piece by piece with eq. (12), float64, independent of the kernels."""
    x = x.double()
    k = coef.detach().double()
    out = torch.empty_like(x)
    pieces = [(x < 0), (x >= 0) & (x < x_L), (x >= x_L)]
    t = x.clamp(-1, 1)
    for i, m in enumerate(pieces):
        a, b, c, d = k[i]
        out[m] = ((a * t[m] + b) * t[m] + c) * t[m] + d
    out[x < -1] = float(k[0] @ torch.tensor([-1.0, 1.0, -1.0, 1.0], dtype=k.dtype))
    out[x > 1] = float(k[2].sum())
    return out


def random_params(rng: np.random.Generator, n: int) -> list[tuple[float, float, float]]:
    return [
        (
            float(rng.uniform(0.05, 0.95)),
            float(rng.uniform(-0.9, -0.01)),
            float(rng.uniform(0.2, 3.0)),
        )
        for _ in range(n)
    ]


# ----------------------------------------------------------------------------- table
def test_coefficient_table_shape_and_interpolation_conditions():
    rng = np.random.default_rng(0)
    for x_L, P1, s_L in random_params(rng, 20):
        k = coefficients(x_L, P1, s_L)
        assert k.shape == (3, 4) and k.dtype == torch.float64

        def val(i, x, k=k):
            a, b, c, d = k[i].tolist()
            return ((a * x + b) * x + c) * x + d

        def der(i, x, k=k):
            a, b, c, _ = k[i].tolist()
            return (3 * a * x + 2 * b) * x + c

        # eq. (7): values P1, 0, P3, 1 at the knots; slopes 0 at -1 and 1, eq. (6) at 0
        assert val(0, -1.0) == pytest.approx(P1, abs=1e-12)
        assert val(0, 0.0) == pytest.approx(0.0, abs=1e-12)
        assert val(2, 1.0) == pytest.approx(1.0, abs=1e-12)
        assert der(0, -1.0) == pytest.approx(0.0, abs=1e-12)
        assert der(2, 1.0) == pytest.approx(0.0, abs=1e-12)
        assert der(0, 0.0) == pytest.approx(-s_L * P1, abs=1e-12)
        P3, m3 = (float(v) for v in P.knot_values(x_L, P1, s_L))
        assert val(1, x_L) == pytest.approx(P3, abs=1e-12)
        assert val(2, x_L) == pytest.approx(P3, abs=1e-12)
        assert der(1, x_L) == pytest.approx(m3, abs=1e-12)


def test_coefficients_dtype_follows_tensor_inputs_and_is_differentiable():
    x_L = torch.tensor(0.19, dtype=torch.float32, requires_grad=True)
    k = coefficients(x_L, -0.24, 1.85)
    assert k.dtype == torch.float32
    k.sum().backward()
    assert x_L.grad is not None and torch.isfinite(x_L.grad)
    params = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in DEFAULTS]
    assert torch.autograd.gradcheck(lambda *p: coefficients(*p), params)


# ----------------------------------------------------------------------------- values
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pcp_matches_piecewise_horner_reference(dtype):
    rng = np.random.default_rng(1)
    x = torch.linspace(-2.5, 2.5, 20001, dtype=dtype)
    for params in [DEFAULTS, *random_params(rng, 5)]:
        k = coefficients(*params)
        ref = horner_reference(x, k, params[0])
        got = pcp(x, *params)
        assert got.dtype == dtype and got.shape == x.shape
        # rounding grows with the coefficients (cancellation inside a piece)
        tol = (1e-13 if dtype == torch.float64 else 1e-6) * (1 + float(k.abs().max()))
        assert torch.allclose(got.double(), ref, atol=tol, rtol=0)


def test_constant_extensions_and_range():
    x = torch.linspace(-50, 50, 100001, dtype=torch.float64)
    y = pcp(x)
    # the constants are the end pieces evaluated at -1 / 1: equal up to rounding
    assert torch.allclose(y[x < -1], torch.tensor(-0.24, dtype=torch.float64), atol=1e-14, rtol=0)
    assert torch.allclose(y[x > 1], torch.tensor(1.0, dtype=torch.float64), atol=1e-14, rtol=0)
    assert len(torch.unique(y[x < -1])) == 1 and len(torch.unique(y[x > 1])) == 1
    assert y.min() >= -0.24 - 1e-12 and y.max() <= 1 + 1e-12


def kernel_outputs(kernel, x, coef, x_L, grad):
    """(PCP(x), d/dx, d/d table) of :func:`cfdan.pcp.kernels.pcp_table` with ``kernel``."""
    x = x.detach().requires_grad_()
    coef = coef.detach().requires_grad_()
    y = K.pcp_table(x, coef, torch.tensor(x_L, dtype=torch.float64), kernel=kernel)
    gx, gk = torch.autograd.grad(y, (x, coef), grad)
    return y.detach(), gx, gk


@pytest.mark.parametrize(
    "dtype, tol, sum_rtol", [(torch.float64, 1e-13, 1e-12), (torch.float32, 2e-6, 1e-5)]
)
def test_blocked_kernels_equal_generic_kernels(dtype, tol, sum_rtol):
    """The L2-blocked truncated-power kernels (forward, d/dx, d/d table) agree with the
    torch.where + Horner path and dense sums, and are what pcp() runs on the CPU."""
    k = coefficients(*DEFAULTS)
    assert K.spline_form(k, DEFAULTS[0]) is not None
    gen = torch.Generator().manual_seed(2)
    x = (torch.randn(30001, generator=gen) * 1.2).to(dtype)
    g = torch.randn(30001, generator=gen).to(dtype)
    fast = kernel_outputs("blocked", x, k, DEFAULTS[0], g)
    slow = kernel_outputs("generic", x, k, DEFAULTS[0], g)
    assert torch.allclose(fast[0], slow[0], atol=tol, rtol=0)
    assert torch.allclose(fast[1], slow[1], atol=10 * tol, rtol=0)
    # d/d table: sums over 30001 elements, per block in the work dtype for "blocked"
    assert torch.allclose(fast[2], slow[2], atol=1e-9, rtol=sum_rtol)
    xr = x.clone().requires_grad_()
    y = pcp(xr)
    (gx,) = torch.autograd.grad(y, xr, g)
    assert torch.equal(y.detach(), fast[0]) and torch.equal(gx, fast[1])
    assert not torch.equal(fast[0], slow[0])  # two different evaluations, not one path twice


def test_kernel_choice_is_validated():
    x, k, xl = torch.zeros(3), coefficients(*DEFAULTS), torch.tensor(0.19, dtype=torch.float64)
    with pytest.raises(ValueError, match="unknown PCP kernel"):
        K.pcp_table(x, k, xl, kernel="fast")
    with pytest.raises(ValueError, match="no blocked kernel"):
        K.pcp_spline(x, K.spline_parameters(k, xl), kernel="blocked")


def test_blocking_handles_ragged_last_block(monkeypatch):
    monkeypatch.setattr(K, "CPU_BLOCK", 1000)
    x = torch.linspace(-1.3, 1.3, 4567, dtype=torch.float64, requires_grad=True)
    y = pcp(x)
    ref = horner_reference(x.detach(), coefficients(*DEFAULTS), DEFAULTS[0])
    assert torch.allclose(y.detach(), ref, atol=1e-12, rtol=0)
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_shapes_noncontiguous_empty_and_scalar():
    x = torch.randn(6, 5, 4, dtype=torch.float64).transpose(0, 2)
    assert not x.is_contiguous()
    assert torch.allclose(pcp(x), pcp(x.contiguous()))
    assert pcp(torch.empty(0, 3)).shape == (0, 3)
    assert pcp(torch.tensor(0.5)).shape == ()


def test_non_c2_table_uses_generic_path():
    """An arbitrary (3, 4) table is evaluated piece by piece, not via the C2 shortcut."""
    k = torch.randn(3, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert K.spline_form(k, 0.3) is None
    x = torch.linspace(-1.5, 1.5, 3001, dtype=torch.float64)
    with pytest.raises(ValueError, match="C2 table"):
        K.pcp_table(x, k, torch.tensor(0.3, dtype=torch.float64), kernel="blocked")
    got = pcp_from_coefficients(x, k, 0.3)
    assert torch.allclose(got, horner_reference(x, k, 0.3), atol=1e-12, rtol=0)


def test_rejects_integer_input_and_bad_table():
    with pytest.raises(TypeError, match="floating-point"):
        pcp(torch.arange(3))
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        pcp_from_coefficients(torch.zeros(3), torch.zeros(4, 3), 0.2)


# ----------------------------------------------------------------------------- gradients
def test_gradcheck_wrt_x():
    x = torch.cat(
        [torch.linspace(-1.6, 1.6, 41, dtype=torch.float64), torch.tensor([-0.5, 0.1, 0.6])]
    )
    x = x[(x - 0.19).abs() > 1e-3]  # keep finite differences off the knots' exact points
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda t: pcp(t), (x,))


def test_gradcheck_wrt_shape_parameters():
    x = torch.randn(64, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 1.3
    params = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in DEFAULTS]
    assert torch.autograd.gradcheck(lambda *p: pcp(x, *p), params)
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda t, *p: pcp(t, *p), (x, *params))


def test_gradcheck_wrt_table():
    x = torch.randn(50, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 1.3
    k = coefficients(*DEFAULTS).clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda kk: pcp_from_coefficients(x, kk, 0.19), (k,))


def test_derivative_zero_outside_and_bounded():
    x = torch.linspace(-3, 3, 60001, dtype=torch.float32, requires_grad=True)
    pcp(x).sum().backward()
    g = x.grad
    assert torch.all(g[x.detach().abs() > 1] == 0)
    assert g.min() >= 0  # monotone at the paper's parameters


def test_numerical_continuity_at_knots():
    eps = 1e-7
    for x_L, P1, s_L in [DEFAULTS, (0.5, -0.5, 1.0), (0.8, -0.1, 2.5)]:
        for knot in (-1.0, 0.0, x_L, 1.0):
            x = torch.tensor([knot - eps, knot + eps], dtype=torch.float64, requires_grad=True)
            y = pcp(x, x_L, P1, s_L)
            (g,) = torch.autograd.grad(y.sum(), x)
            assert abs(float(y[1].detach() - y[0].detach())) < 1e-5, (knot, "C0")
            assert abs(float(g[1] - g[0])) < 1e-5, (knot, "C1")


# ----------------------------------------------------------------------------- dtypes/devices
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_runs_and_is_accurate(dtype):
    x64 = torch.linspace(-1.5, 1.5, 3001, dtype=torch.float64)
    x = x64.to(dtype).requires_grad_()
    y = pcp(x)
    assert y.dtype == dtype
    ref = pcp(x.detach().double())
    # evaluated in float32, rounded once: error within one rounding of the output
    assert torch.allclose(y.double(), ref, atol=8e-3, rtol=0)
    y.sum().backward()
    assert x.grad.dtype == dtype and torch.isfinite(x.grad.float()).all()
    m = PCP(learnable=True)
    z = m(x.detach())
    assert z.dtype == dtype
    z.float().sum().backward()
    assert m.s_L.grad is not None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_matches_cpu(dtype):
    x = torch.randn(10000, dtype=dtype) * 1.3
    assert torch.allclose(pcp(x.cuda()).cpu().float(), pcp(x).float(), atol=1e-2)
    m = PCP(learnable=True).cuda()
    xc = x.cuda().requires_grad_()
    m(xc).float().sum().backward()
    assert xc.grad is not None and m.x_L.grad is not None


# ----------------------------------------------------------------------------- module
@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"x_L": 0.0}, "x_L"),
        ({"x_L": 1.0}, "x_L"),
        ({"x_L": float("nan")}, "x_L"),
        ({"P1": 0.0}, "P1"),
        ({"P1": 0.3}, "P1"),
        ({"s_L": 0.0}, "s_L"),
        ({"s_L": -1.0}, "s_L"),
    ],
)
def test_domain_errors_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        PCP(**kwargs)
    with pytest.raises(ValueError, match=name):
        PCP(learnable=True, **kwargs)
    with pytest.raises(ValueError, match=name):
        pcp(torch.zeros(2), **kwargs)


def test_module_defaults_repr_and_fixed_equals_functional():
    m = PCP()
    assert m.effective_parameters() == {"x_L": 0.19, "P1": -0.24, "s_L": 1.85}
    assert "x_L=0.19" in repr(m) and "learnable=False" in repr(m)
    assert list(m.parameters()) == []
    x = torch.randn(100)
    assert torch.equal(m(x), pcp(x))
    assert torch.equal(m.coefficients(), coefficients(*DEFAULTS))


def test_learnable_module_gets_gradients_and_matches_fixed():
    m = PCP(learnable=True)
    assert {n for n, _ in m.named_parameters()} == {"x_L", "P1", "s_L"}
    x = torch.randn(1000, generator=torch.Generator().manual_seed(6)) * 1.3
    y = m(x)
    assert torch.allclose(y, PCP()(x), atol=1e-6)
    (y * torch.linspace(-1, 1, 1000)).sum().backward()
    for p in (m.x_L, m.P1, m.s_L):
        assert p.grad is not None and torch.isfinite(p.grad) and p.grad != 0
    assert "learnable=True" in repr(m)


def test_learnable_parameters_are_clamped_into_domain():
    m = PCP(learnable=True)
    with torch.no_grad():
        m.P1.fill_(0.5)
    assert m.effective_parameters()["P1"] == pytest.approx(-P.DOMAIN_EPS)
    x = torch.linspace(-2, 2, 101)
    m(x).sum().backward()
    assert m.P1.grad == 0  # outside the domain: clamped, no gradient
    assert torch.isfinite(m(x)).all()


def test_parallel_parts_match_serial(monkeypatch):
    """Large tensors are split over Python threads; the result must not depend on it."""
    monkeypatch.setattr(K, "CPU_BLOCK", 512)
    monkeypatch.setattr(K, "PARALLEL_MIN", 1024)
    x = torch.linspace(-1.4, 1.4, 10007, dtype=torch.float64, requires_grad=True)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        y = pcp(x)
        (g,) = torch.autograd.grad(y.sum(), x)
        torch.set_num_threads(1)
        y1 = pcp(x)
        (g1,) = torch.autograd.grad(y1.sum(), x)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(y, y1) and torch.equal(g, g1)


# ----------------------------------------------------------------------------- benchmark
def test_benchmark_functions_run_small():
    from cfdan.pcp.bench import benchmark_activations, benchmark_pcp_kernels

    threads = torch.get_num_threads()
    df = benchmark_activations(
        n=4096,
        repeats=2,
        warmup=1,
        modes=("eager",),
        activations=("PCP", "ReLU", "Sigmoid"),
        threads=1,
    )
    assert torch.get_num_threads() == threads  # restored
    assert list(df.activation) == ["PCP", "ReLU", "Sigmoid"] and (df.status == "ok").all()
    assert (df.fwd_ms > 0).all() and (df.fwd_bwd_ms > 0).all()
    assert df.loc[df.activation == "ReLU", "fwd_vs_relu"].item() == 1.0
    k = benchmark_pcp_kernels(n=4096, repeats=2)
    assert (k.fwd_ms > 0).all() and len(k) == 5
    assert df.attrs["allocator"] == k.attrs["allocator"]
    with pytest.raises(ValueError, match="unknown activations"):
        benchmark_activations(n=16, activations=("Softplus",))


def test_steady_allocator_reuses_buffers_without_page_faults():
    """After :func:`steady_allocator`, a 4 MB activation output reuses freed heap memory:
    repeated calls fault in (almost) no fresh pages, so no timed call pays for them."""
    import platform
    import subprocess
    import sys
    import textwrap

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt thresholds are glibc's")
    # in a fresh process, as the benchmark runs: the test runner's own heap (its layout depends
    # on which tests were collected) would otherwise decide where the buffers land
    script = textwrap.dedent("""
        import resource, torch
        torch.set_num_threads(1)  # a second OpenMP thread faults in pages of its own
        from cfdan.pcp.bench import steady_allocator
        print(steady_allocator())
        x = torch.randn(1 << 20)
        for _ in range(10):  # warm-up: the heap grows
            torch.sigmoid(x)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):
            torch.sigmoid(x)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=120).stdout.splitlines()
    assert out[0].startswith("glibc mallopt: mmap threshold 32 MiB")
    faults = int(out[1])
    # a fresh 4 MB buffer per call would be 20 x 1024 pages; a late one-off growth of the heap
    # by a buffer or two (2,048 pages, seen in about one run in four) is not a per-call cost
    assert faults < 5 * 1024, faults


def test_blocked_coefficient_grad_equals_dense_over_parts(monkeypatch):
    """Block and thread-part sums of d/d table equal the dense sums (ragged last block)."""
    monkeypatch.setattr(K, "CPU_BLOCK", 700)
    monkeypatch.setattr(K, "PARALLEL_MIN", 1000)
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(5003, generator=gen, dtype=torch.float64) * 1.3
    g = torch.randn(5003, generator=gen, dtype=torch.float64)
    k = coefficients(*DEFAULTS)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        blocked = kernel_outputs("blocked", x, k, DEFAULTS[0], g)[2]
    finally:
        torch.set_num_threads(threads)
    dense = kernel_outputs("generic", x, k, DEFAULTS[0], g)[2]
    assert torch.allclose(blocked, dense, rtol=1e-12, atol=1e-9)


def test_spline_function_matches_table_path_and_gradchecks():
    """The truncated-power Function (learnable PCP on CUDA) on CPU with generic ops."""
    params = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in DEFAULTS]
    x = torch.randn(300, generator=torch.Generator().manual_seed(8), dtype=torch.float64) * 1.3
    x.requires_grad_()
    g = torch.randn(300, dtype=torch.float64, generator=torch.Generator().manual_seed(9))

    def via_spline(xx, *p):
        coef = coefficients(*p)
        return K.pcp_spline(xx, K.spline_parameters(coef, p[0]))

    y_s = via_spline(x, *params)
    y_t = pcp(x, *params)
    assert torch.allclose(y_s, y_t, atol=1e-13, rtol=0)
    gs = torch.autograd.grad(y_s, [x, *params], g)
    gt = torch.autograd.grad(y_t, [x, *params], g)
    for a, b in zip(gs, gt, strict=True):
        assert torch.allclose(a, b, atol=1e-9, rtol=1e-9)
    assert torch.autograd.gradcheck(via_spline, (x, *params))
    # bfloat16 input: output dtype kept
    yb = K.pcp_spline(
        x.detach().bfloat16(),
        K.spline_parameters(coefficients(*DEFAULTS), torch.tensor(0.19, dtype=torch.float64)),
    )
    assert yb.dtype == torch.bfloat16
