"""The reference ODE solver against the closed-form Gaussian solution, and its order."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edm_samplers import heun_sample, karras_sigmas
from edm_samplers.evaluation import GaussianMixture, gaussian_ode_solution, ode_reference, solve_ode


def _gaussian(mu: float, s: float, dim: int) -> GaussianMixture:
    return GaussianMixture(torch.full((1, dim), mu, dtype=torch.float64), stds=s)


@settings(max_examples=25, deadline=None)
@given(
    mu=st.floats(-3, 3),
    s=st.floats(0.05, 2.0),
    sigma0=st.floats(1.0, 80.0),
    sigma1=st.floats(0.002, 0.5),
    seed=st.integers(0, 1000),
)
def test_solve_ode_matches_closed_form(mu: float, s: float, sigma0: float, sigma1: float, seed: int) -> None:
    x0 = torch.randn(3, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * sigma0
    got, info = solve_ode(_gaussian(mu, s, 4), x0, sigma0, sigma1, rtol=1e-9, atol=1e-9)
    want = gaussian_ode_solution(x0, sigma0, sigma1, mu, s)
    # Local tolerance 1e-9 per step; the linear ODE is contracting in log-sigma (|x - mu| shrinks),
    # so the global error stays within a small multiple of it: 1e-7 relative to |x0| is a 100x margin.
    assert float((got - want).abs().max()) <= 1e-7 * max(1.0, float(x0.abs().max()))
    assert info.nfe == 6 * (info.accepted + info.rejected) + 1  # FSAL: 6 new stages per attempt, +1 start


def test_solve_ode_converges_at_fifth_order_in_tolerance() -> None:
    # Tightening the tolerance 1000x must cut the global error by orders of magnitude (until round-off).
    gm, x0 = _gaussian(0.3, 0.1, 2), torch.tensor([[60.0, -40.0]], dtype=torch.float64)
    want = gaussian_ode_solution(x0, 80.0, 0.002, 0.3, 0.1)
    errs = [float((solve_ode(gm, x0, 80.0, 0.002, rtol=t, atol=t)[0] - want).abs().max()) for t in (1e-4, 1e-7)]
    assert errs[1] < errs[0] / 100


def test_solve_ode_forward_direction_inverts_backward() -> None:
    # The ODE is a bijection: integrating 0.01 -> 10 and back reproduces the start (well-conditioned here).
    g = GaussianMixture(torch.tensor([[-1.0, 0.0], [1.0, 0.5]], dtype=torch.float64), stds=0.3)
    x = torch.tensor([[0.2, 0.1], [1.4, 0.4]], dtype=torch.float64)
    up, _ = solve_ode(g, x, 0.01, 10.0, rtol=1e-12, atol=1e-12)
    back, _ = solve_ode(g, up, 10.0, 0.01, rtol=1e-12, atol=1e-12)
    assert torch.allclose(back, x, rtol=0, atol=1e-8)


def test_ode_reference_is_the_limit_of_heun() -> None:
    # A mixture (no closed form): Heun's error shrinks ~ N^-2 towards the reference.
    g = torch.Generator().manual_seed(0)
    gm = GaussianMixture(torch.randn(4, 3, generator=g, dtype=torch.float64), stds=0.2)
    x0 = torch.randn(8, 3, generator=g, dtype=torch.float64) * 80
    ref = ode_reference(gm, x0, karras_sigmas(10))
    outs = [heun_sample(gm, x0, karras_sigmas(n), dtype=torch.float64) for n in (32, 64)]
    errs = [float((out - ref).norm(dim=1).max()) for out in outs]
    assert errs[1] < errs[0] / 3  # order 2 gives 4x; 3x leaves room for the pre-asymptotic regime


def test_ode_reference_final_step_is_the_denoiser() -> None:
    gm, x0 = _gaussian(0.5, 0.2, 2), torch.randn(2, 2, dtype=torch.float64) * 80
    ref = ode_reference(gm, x0, karras_sigmas(5))
    x_low = gaussian_ode_solution(x0, 80.0, 0.002, 0.5, 0.2)
    want = gm(x_low, torch.full((2,), 0.002, dtype=torch.float64))
    assert torch.allclose(ref, want, rtol=0, atol=1e-9)
    # Without the final zero, the reference stops at the last positive level.
    assert torch.allclose(ode_reference(gm, x0, karras_sigmas(5)[:-1]), x_low, rtol=0, atol=1e-8)


def test_solve_ode_errors() -> None:
    gm, x = _gaussian(0.0, 1.0, 2), torch.zeros(1, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="sigma_end"):
        solve_ode(gm, x, 1.0, 0.0)
    with pytest.raises(ValueError, match="rtol"):
        solve_ode(gm, x, 1.0, 0.5, rtol=-1)
    with pytest.raises(RuntimeError, match="max_steps"):
        solve_ode(gm, x + 5, 80.0, 0.002, rtol=1e-12, atol=1e-12, max_steps=3)
    with pytest.raises(RuntimeError, match="non-finite"):
        solve_ode(lambda x, s: x * math.nan, x, 1.0, 0.5)
    assert torch.equal(solve_ode(gm, x, 1.0, 1.0)[0], x)
