"""EDM/VP/VE losses: analytic minimum at the ideal denoiser, unit effective weight, sigma distributions."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from edm_samplers import (
    AugmentPipe,
    EDMLoss,
    GaussianMixture,
    LearnedUncertainty,
    VELoss,
    VPLoss,
    edm_weight,
    inverse_square_weight,
    lognormal_sigmas,
    loguniform_sigmas,
    vp_sigma_inv,
    vp_training_sigmas,
)
from edm_samplers.models import UNet
from edm_samplers.precond import EDMPrecond, edm_scalings, ve_scalings, vp_scalings

D = 256  # elements per image
B = 512  # images


def _gaussian(s: float, seed: int = 0) -> tuple[GaussianMixture, torch.Tensor]:
    mu = torch.randn(1, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 0.3
    gm = GaussianMixture(mu, stds=s)
    return gm, gm.sample(B, generator=torch.Generator().manual_seed(seed + 1))


# Independent transcription of Table 1's training rows: (loss, sigma sampler, lambda(sigma)).
CASES: list[tuple[Any, Any, Any]] = [
    (EDMLoss(), lambda g: lognormal_sigmas(B, generator=g), lambda s: (s**2 + 0.25) / (s * 0.5) ** 2),
    (EDMLoss(p_mean=0.3, p_std=0.5, sigma_data=1.5), lambda g: lognormal_sigmas(B, p_mean=0.3, p_std=0.5, generator=g),
     lambda s: (s**2 + 2.25) / (s * 1.5) ** 2),
    (VPLoss(), lambda g: vp_training_sigmas(B, generator=g), lambda s: 1 / s**2),
    (VELoss(), lambda g: loguniform_sigmas(B, generator=g), lambda s: 1 / s**2),
]  # fmt: skip


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("s", [0.5, 0.2])
def test_ideal_denoiser_reaches_the_analytic_minimum(case: int, s: float) -> None:
    # For data N(mu, s^2 I) the ideal denoiser leaves a posterior variance s^2 sigma^2 / (s^2 + sigma^2) per
    # element, so the expected loss at sigma is lambda(sigma) s^2 sigma^2 / (s^2 + sigma^2).
    loss_fn, sampler, lam = CASES[case]
    gm, images = _gaussian(s)
    loss = loss_fn(gm, images, generator=torch.Generator().manual_seed(7))
    assert loss.shape == images.shape and loss.dtype == torch.float64
    sigma = sampler(torch.Generator().manual_seed(7)).to(torch.float64)  # the same draws as inside the loss
    expect = lam(sigma) * s**2 * sigma**2 / (s**2 + sigma**2)
    ratio = loss.mean(1) / expect  # each ~ chi^2_D / D: mean 1, std sqrt(2 / D)
    # the mean of B ratios has std sqrt(2 / (D B)) = 0.0039; allow 5 standard deviations
    assert abs(float(ratio.mean()) - 1) < 5 * math.sqrt(2 / (D * B))


@pytest.mark.parametrize("case", range(len(CASES)))
def test_perturbed_denoisers_do_worse(case: int) -> None:
    loss_fn = CASES[case][0]
    gm, images = _gaussian(0.3)
    base = loss_fn(gm, images, generator=torch.Generator().manual_seed(3)).mean()
    for delta in (-0.2, 0.2):
        shrunk = lambda x, sigma, gm=gm, delta=delta: gm(x, sigma) + delta * (x - gm(x, sigma)) / (1 + sigma[:, None])  # noqa: E731
        worse = loss_fn(shrunk, images, generator=torch.Generator().manual_seed(3)).mean()
        assert worse > base


@settings(max_examples=40, deadline=None)
@given(st.floats(-7.0, 5.0), st.floats(0.1, 2.0))
def test_effective_weight_is_one(log_sigma: float, sigma_data: float) -> None:
    sigma = torch.tensor([math.exp(log_sigma)], dtype=torch.float64)
    # lambda(sigma) c_out(sigma)^2 = 1 for each formulation; float64 round-off only
    torch.testing.assert_close(edm_weight(sigma, sigma_data) * edm_scalings(sigma, sigma_data).c_out ** 2,
                               torch.ones(1, dtype=torch.float64), rtol=1e-12, atol=0)  # fmt: skip
    for c_out in (vp_scalings(sigma).c_out, ve_scalings(sigma).c_out):
        torch.testing.assert_close(inverse_square_weight(sigma) * c_out**2, torch.ones(1, dtype=torch.float64),
                                   rtol=1e-12, atol=0)  # fmt: skip


N_KS = 20000


def test_lognormal_sampler_ks() -> None:
    s = lognormal_sigmas(N_KS, p_mean=-1.2, p_std=1.2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert stats.kstest(s.log().numpy(), "norm", args=(-1.2, 1.2)).pvalue > 0.01
    # negative control: a shift of 0.1 is detected at this sample size (KS power ~1 for 0.083 std shift)
    assert stats.kstest(s.log().numpy(), "norm", args=(-1.1, 1.2)).pvalue < 1e-6


def test_loguniform_sampler_ks() -> None:
    s = loguniform_sigmas(N_KS, sigma_min=0.02, sigma_max=100, generator=torch.Generator().manual_seed(1),
                          dtype=torch.float64)  # fmt: skip
    lo, hi = math.log(0.02), math.log(100)
    assert stats.kstest(s.log().numpy(), "uniform", args=(lo, hi - lo)).pvalue > 0.01
    assert stats.kstest(s.numpy(), "uniform", args=(0.02, 100 - 0.02)).pvalue < 1e-6


def test_vp_sampler_ks() -> None:
    s = vp_training_sigmas(N_KS, eps_t=1e-5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    t = vp_sigma_inv(s)
    assert stats.kstest(t.numpy(), "uniform", args=(1e-5, 1 - 1e-5)).pvalue > 0.01
    assert stats.kstest(t.numpy(), "uniform", args=(0.05, 0.95)).pvalue < 1e-6


def test_conditioning_keywords_pass_through() -> None:
    seen: list[dict[str, Any]] = []

    def rec(x: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> torch.Tensor:
        seen.append(cond)
        assert sigma.shape == (x.shape[0],)
        return x * 0

    images = torch.randn(4, 1, 8, 8)
    EDMLoss()(rec, images)
    assert seen[-1] == {}
    labels = torch.arange(4)
    EDMLoss()(rec, images, labels, AugmentPipe(p=1.0))
    assert set(seen[-1]) == {"class_labels", "augment_labels"}
    assert seen[-1]["class_labels"] is labels and seen[-1]["augment_labels"].shape == (4, AugmentPipe.label_dim)


def test_reproducible_with_generator_and_trains_a_unet() -> None:
    torch.manual_seed(0)
    net = UNet(1, 8, model_channels=16, channel_mult=(1, 2), num_blocks=1, label_dim=10,
               augment_dim=AugmentPipe.label_dim)  # fmt: skip
    den = EDMPrecond(net)
    images, labels = torch.rand(8, 1, 8, 8) * 2 - 1, torch.arange(8)
    pipe = AugmentPipe(p=0.5)
    a = EDMLoss()(den, images, labels, pipe, generator=torch.Generator().manual_seed(1))
    b = EDMLoss()(den, images, labels, pipe, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    a.mean().backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_learned_uncertainty_starts_neutral_and_learns_log_loss() -> None:
    gm, _ = _gaussian(0.3)
    images = gm.sample(256, generator=torch.Generator().manual_seed(0))[:, :64].contiguous()
    gm64 = GaussianMixture(gm.means[:, :64], stds=0.3)
    unc = LearnedUncertainty()
    plain = EDMLoss()(gm64, images, generator=torch.Generator().manual_seed(0))
    with_u = EDMLoss(uncertainty=unc)(gm64, images, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(plain, with_u)  # u = 0 at initialisation: the plain loss
    opt = torch.optim.Adam(unc.parameters(), lr=0.03)
    g = torch.Generator().manual_seed(1)
    for _ in range(300):
        loss = EDMLoss(uncertainty=unc)(gm64, images, generator=g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    # optimum: u(sigma) = log E[lambda err^2] = log(lambda(sigma) s^2 sigma^2 / (s^2 + sigma^2))
    sig = torch.tensor([0.1, 0.3, 1.0, 3.0])
    target = torch.log((sig**2 + 0.25) / (sig * 0.5) ** 2 * 0.09 * sig**2 / (0.09 + sig**2))
    with torch.no_grad():
        # stochastic optimisation of a 129-parameter fit: within 0.15 nats of the optimum
        assert (unc(sig) - target).abs().max() < 0.15


def test_errors() -> None:
    gm, images = _gaussian(0.5)
    with pytest.raises(TypeError, match="denoiser must be callable"):
        EDMLoss()("net", images)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="images must be a floating"):
        EDMLoss()(gm, images.long())
    with pytest.raises(ValueError, match="labels has 3 rows"):
        EDMLoss()(gm, images, torch.zeros(3))
    with pytest.raises(ValueError, match="must have the shape of x"):
        EDMLoss()(lambda x, s: x[:, :3], images)
    with pytest.raises(ValueError, match="sigma_data must be > 0"):
        EDMLoss(sigma_data=0)
    with pytest.raises(ValueError, match="sigma_min must be < sigma_max"):
        VELoss(sigma_min=10, sigma_max=1)
    with pytest.raises(ValueError, match="eps_t must be in"):
        VPLoss(eps_t=1.0)
    with pytest.raises(ValueError, match="n must be >= 1"):
        lognormal_sigmas(0)
    with pytest.raises(TypeError, match="dtype must be a floating"):
        lognormal_sigmas(3, dtype=torch.int64)
