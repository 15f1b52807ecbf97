"""EDM/VP/VE losses: analytic minimum at the ideal denoiser, unit effective weight, sigma distributions."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from edm_samplers import vp_sigma_inv
from edm_samplers.evaluation import GaussianMixture
from edm_samplers.models import UNet
from edm_samplers.precond import EDMPrecond, edm_scalings, ve_scalings, vp_scalings
from edm_samplers.training import (
    AugmentPipe,
    EDMLoss,
    LearnedUncertainty,
    VELoss,
    VPLoss,
    edm_weight,
    inverse_square_weight,
    lognormal_sigmas,
    loguniform_sigmas,
    vp_training_sigmas,
)

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


# Statistical checks take a seed; the tests run a few, benchmarks/seed_robustness.py runs 1000 of each.
SEEDS = (0, 1)


def check_ideal_minimum(case: int, s: float, seed: int) -> dict[str, float]:
    # For data N(mu, s^2 I) the ideal denoiser leaves a posterior variance s^2 sigma^2 / (s^2 + sigma^2) per
    # element, so the expected loss at sigma is lambda(sigma) s^2 sigma^2 / (s^2 + sigma^2).
    loss_fn, sampler, lam = CASES[case]
    gm, images = _gaussian(s, seed)
    loss = loss_fn(gm, images, generator=torch.Generator().manual_seed(seed + 7))
    assert loss.shape == images.shape and loss.dtype == torch.float64
    sigma = sampler(torch.Generator().manual_seed(seed + 7)).to(torch.float64)  # the same draws as inside the loss
    expect = lam(sigma) * s**2 * sigma**2 / (s**2 + sigma**2)
    # D(y) - x = (posterior mean - x) is N(0, s^2 sigma^2 / (s^2 + sigma^2)) per element, independent across
    # elements and images, so ratio.mean() is exactly chi^2_k / k with k = D B = 131072: mean 1, std
    # sqrt(2 / k) = 0.0039, skewness sqrt(8 / k) = 0.008 (Gaussian to the eye). 5 std two-sided: P(fail) = 6e-7.
    ratio = loss.mean(1) / expect
    z = (float(ratio.mean()) - 1) / math.sqrt(2 / (D * B))
    assert abs(z) < 5
    return {"z": z}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("s", [0.5, 0.2])
def test_ideal_denoiser_reaches_the_analytic_minimum(case: int, s: float, seed: int) -> None:
    check_ideal_minimum(case, s, seed)


def check_perturbed_worse(case: int, seed: int) -> dict[str, float]:
    loss_fn = CASES[case][0]
    gm, images = _gaussian(0.3, seed)
    gen = seed + 3
    base = loss_fn(gm, images, generator=torch.Generator().manual_seed(gen)).mean()
    # Same sigma and noise draws for both losses (paired). Per element, with r = D - x and w = y - D
    # (independent Gaussians: the posterior residual is independent of y), the perturbed loss adds
    # lambda (2 delta r w / (1 + sigma) + delta^2 w^2 / (1 + sigma)^2). Given sigma and w, the first term
    # is Gaussian with mean 0 and the second is positive: the total gain is sum_i A_i with A_i =
    # lambda delta^2 w^2 / (1 + sigma)^2 against a N(0, sum_i 4 delta^2 lambda^2 a sigma^2 w^2 / (1 + sigma)^2)
    # cross term (a = s^2 / (s^2 + sigma^2)). For these cases at delta = 0.2, B = 512, D = 256 that
    # ratio is z >= 16 (200 draws of sigma and w, case 3 the lowest): P(fail) ~ Phi(-16) ~ 1e-58.
    gains = []
    for delta in (-0.2, 0.2):
        shrunk = lambda x, sigma, gm=gm, delta=delta: gm(x, sigma) + delta * (x - gm(x, sigma)) / (1 + sigma[:, None])  # noqa: E731
        worse = loss_fn(shrunk, images, generator=torch.Generator().manual_seed(gen)).mean()
        assert worse > base
        gains.append(float(worse / base) - 1)
    return {"relative_gain": min(gains)}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_perturbed_denoisers_do_worse(case: int, seed: int) -> None:
    check_perturbed_worse(case, seed)


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


# Sampler distributions: Kolmogorov-Smirnov distance D_n = sup_x |F_n(x) - F(x)| with a fixed threshold from
# the Dvoretzky-Kiefer-Wolfowitz inequality (Massart's constant): P(D_n > eps) <= 2 exp(-2 n eps^2) for every
# n and continuous F, so eps = sqrt(ln(2 / ALPHA) / (2 n)) fails with probability <= ALPHA = 1e-6 whatever
# the seed (a p-value > 0.01 criterion fails for 1 % of seeds by construction; ALPHA = 1e-4 still failed
# one seed in 1000: seed 985's 50,000 draws have a KS p-value of 1.4e-5). Each negative control is a
# wrong law G with sup |F - G| >= 2 eps: on the same DKW event D_n(G) >= sup |F - G| - D_n(F) > eps, so
# both assertions hold together with probability >= 1 - ALPHA.
N_KS = 50_000
ALPHA = 1e-6
KS_EPS = math.sqrt(math.log(2 / ALPHA) / (2 * N_KS))  # 0.0120


def _ks(x: torch.Tensor, cdf: Any) -> float:
    """sup |F_n - F| of the sample ``x`` against the continuous CDF ``cdf`` (scipy's two-sided statistic)."""
    return float(stats.kstest(x.numpy(), cdf).statistic)


def check_lognormal_ks(seed: int) -> dict[str, float]:
    s = lognormal_sigmas(N_KS, p_mean=-1.2, p_std=1.2, generator=torch.Generator().manual_seed(seed),
                         dtype=torch.float64)  # fmt: skip
    d_right = _ks(s.log(), stats.norm(-1.2, 1.2).cdf)
    assert d_right <= KS_EPS
    # negative control: a mean shift of 0.1 (0.083 std) moves the CDF by up to 2 Phi(0.1 / 2.4) - 1 = 0.0332,
    # more than 2 eps = 0.0241
    assert 2 * stats.norm.cdf(0.1 / 2.4) - 1 >= 2 * KS_EPS
    d_wrong = _ks(s.log(), stats.norm(-1.1, 1.2).cdf)
    assert d_wrong > KS_EPS
    return {"D/eps": d_right / KS_EPS, "D_wrong/eps": d_wrong / KS_EPS}


def check_loguniform_ks(seed: int) -> dict[str, float]:
    s = loguniform_sigmas(N_KS, sigma_min=0.02, sigma_max=100, generator=torch.Generator().manual_seed(seed),
                          dtype=torch.float64)  # fmt: skip
    lo, hi = math.log(0.02), math.log(100)
    d_right = _ks(s.log(), stats.uniform(lo, hi - lo).cdf)
    assert d_right <= KS_EPS
    # negative control: uniform in sigma instead of log sigma; at sigma = 1 the CDFs are 0.459 and 0.010
    d_wrong = _ks(s, stats.uniform(0.02, 100 - 0.02).cdf)
    assert d_wrong > KS_EPS
    return {"D/eps": d_right / KS_EPS, "D_wrong/eps": d_wrong / KS_EPS}


def check_vp_ks(seed: int) -> dict[str, float]:
    s = vp_training_sigmas(N_KS, eps_t=1e-5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    t = vp_sigma_inv(s)
    d_right = _ks(t, stats.uniform(1e-5, 1 - 1e-5).cdf)
    assert d_right <= KS_EPS
    # negative control: t uniform on (0.05, 0.95) instead of (eps_t, 1); the CDFs differ by 0.05 at t = 0.05
    d_wrong = _ks(t, stats.uniform(0.05, 0.9).cdf)
    assert d_wrong > KS_EPS
    return {"D/eps": d_right / KS_EPS, "D_wrong/eps": d_wrong / KS_EPS}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("check", [check_lognormal_ks, check_loguniform_ks, check_vp_ks], ids=["lognormal",
                         "loguniform", "vp"])  # fmt: skip
def test_sigma_samplers_ks(check: Any, seed: int) -> None:
    check(seed)


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


def test_learned_uncertainty_loss_is_the_edm2_formula() -> None:
    # EDM2 Eq. 21, transcribed: lambda ||D - y||^2 / exp(u(sigma)) + u(sigma) per element, with the same draws.
    gm, _ = _gaussian(0.3)
    images = gm.sample(16, generator=torch.Generator().manual_seed(0))
    unc = LearnedUncertainty()
    with torch.no_grad():
        unc.linear.weight.normal_(0, 0.3, generator=torch.Generator().manual_seed(1))
        unc.linear.bias.fill_(0.2)
        plain = EDMLoss()(gm, images, generator=torch.Generator().manual_seed(2))
        with_u = EDMLoss(uncertainty=unc)(gm, images, generator=torch.Generator().manual_seed(2))
        u = unc(lognormal_sigmas(16, generator=torch.Generator().manual_seed(2)).to(torch.float64))
    u = u.to(torch.float64)[:, None]
    torch.testing.assert_close(with_u, plain / u.exp() + u, rtol=1e-6, atol=1e-7)  # u is float32: 1e-7 relative


def check_learned_uncertainty(seed: int) -> dict[str, float]:
    gm, _ = _gaussian(0.3, seed)
    gm64 = GaussianMixture(gm.means[:, :64], stds=0.3)
    images = gm64.sample(256, generator=torch.Generator().manual_seed(seed + 100))
    unc = LearnedUncertainty()
    plain = EDMLoss()(gm64, images, generator=torch.Generator().manual_seed(seed))
    with_u = EDMLoss(uncertainty=unc)(gm64, images, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(plain, with_u)  # u = 0 at initialisation: the plain loss
    steps = 200
    opt = torch.optim.Adam(unc.parameters(), lr=0.05)
    # The learning rate decays linearly to 0: the last iterates average out the minibatch noise, where a
    # constant rate leaves the final iterate ~0.1 nats off (0.25 for one seed in 8).
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1 - i / steps)
    g = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        loss = EDMLoss(uncertainty=unc)(gm64, images, generator=g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    # optimum: u(sigma) = log E[lambda err^2] = log(lambda(sigma) s^2 sigma^2 / (s^2 + sigma^2))
    sig = torch.tensor([0.1, 0.3, 1.0, 3.0])
    target = torch.log((sig**2 + 0.25) / (sig * 0.5) ** 2 * 0.09 * sig**2 / (0.09 + sig**2))
    with torch.no_grad():
        # A stochastic fit of 129 parameters, whose error has no closed-form bound: over 1000 seeds
        # (benchmarks/seed_robustness.py, docs/testing-statistics.md) the largest error is 0.077 nats,
        # so 0.15 leaves a factor of 2 (the targets lie 0.07 to 1.0 nats from the start u = 0).
        err = float((unc(sig) - target).abs().max())
    assert err < 0.15
    return {"max_error": err}


def test_learned_uncertainty_starts_neutral_and_learns_log_loss() -> None:
    check_learned_uncertainty(0)


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
