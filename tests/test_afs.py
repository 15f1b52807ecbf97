"""The analytical first step (``afs=``) and per-evaluation direction scales (``direction_scale=``).

Independent references: the Gaussian posterior mean written as a linear solve (not an eigendecomposition), the
single-component :class:`GaussianMixture` of the evaluation package, and EDM's preconditioner around a network
that returns 0 (its output is c_skip x, the zero-mean isotropic closed form)."""

from __future__ import annotations

import pytest
import torch

import edm_samplers as es
from edm_samplers.evaluation import FeatureStats, GaussianMixture
from edm_samplers.solvers.registry import REGISTRY, get

MU, SD = 0.3, 0.5


def _gauss() -> GaussianMixture:
    return GaussianMixture(torch.full((1, 3, 2), MU, dtype=torch.float64), stds=SD)


class Counting:
    def __init__(self, den: object) -> None:
        self.den, self.calls = den, 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **cond: object) -> torch.Tensor:
        self.calls += 1
        return self.den(x, sigma)  # type: ignore[operator]


def test_closed_forms_match_independent_transcriptions() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, 2, generator=g, dtype=torch.float64) * 7
    sigma = torch.tensor([80.0, 10.0, 1.0, 0.1, 0.002], dtype=torch.float64)
    # isotropic: the evaluation package's exact Gaussian denoiser
    assert torch.allclose(es.GaussianDenoiser(MU, SD**2)(x, sigma), _gauss()(x, sigma), rtol=1e-13, atol=1e-14)
    # sigma_data only: EDM's c_skip x (EDMPrecond around F = 0)
    zero_net = es.EDMPrecond(lambda x_in, c_noise: torch.zeros_like(x_in), sigma_data=SD)
    assert torch.allclose(es.GaussianDenoiser(0.0, SD**2)(x, sigma), zero_net(x, sigma), rtol=1e-13, atol=0)
    # full covariance: mu + Sigma (Sigma + s^2 I)^-1 (x - mu) by a linear solve
    a = torch.randn(6, 6, generator=g, dtype=torch.float64)
    cov = a @ a.T / 6 + 0.01 * torch.eye(6, dtype=torch.float64)
    mu = torch.randn(3, 2, generator=g, dtype=torch.float64)
    got = es.GaussianDenoiser(mu, cov=cov)(x, sigma)
    for b in range(5):
        m = cov + sigma[b] ** 2 * torch.eye(6, dtype=torch.float64)
        want = mu.flatten() + cov @ torch.linalg.solve(m, (x[b] - mu).flatten())
        assert torch.allclose(got[b].flatten(), want, rtol=1e-10, atol=1e-12)  # eigh vs solve: ~cond * eps


def test_moments_from_data_and_stats() -> None:
    g = torch.Generator().manual_seed(1)
    data = torch.randn(400, 4, generator=g, dtype=torch.float64) * torch.tensor([0.5, 1.0, 2.0, 0.1]) + 1
    x = torch.randn(3, 4, generator=g, dtype=torch.float64)
    s = torch.full((3,), 0.7, dtype=torch.float64)
    diag = es.GaussianDenoiser.from_data(data)(x, s)
    want = data.mean(0) + data.var(0) / (data.var(0) + 0.49) * (x - data.mean(0))
    assert torch.allclose(diag, want, rtol=1e-13)
    full = es.GaussianDenoiser.from_data(data, full_cov=True)
    stats = FeatureStats(4).update(data)
    assert torch.allclose(full(x, s), es.GaussianDenoiser.from_stats(stats)(x, s), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_sampler_takes_afs_exact_on_gaussian_data_one_network_call_fewer(name: str) -> None:
    gm = _gauss()
    x = torch.randn(4, 3, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 80
    s = es.karras_sigmas(5)
    fn = getattr(es, f"{name}_sample")
    # CFG++ samplers take a guided denoiser (here the same model as main and guide: one batched call per step);
    # under afs the closed form serves as both estimates at the first step.
    wrap = (lambda d: es.guided(d, d, 0.5)) if get(name).guided else (lambda d: d)
    ref = fn(wrap(gm), x, s, noise=es.PerSampleNoise(range(4)))
    net = Counting(gm)
    out = fn(wrap(net), x, s, noise=es.PerSampleNoise(range(4)), afs=es.GaussianDenoiser(MU, SD**2))
    # The closed form is the exact denoiser here: the same result to round-off (two transcriptions of one formula).
    assert torch.allclose(out, ref, rtol=1e-12, atol=1e-12)
    assert net.calls == es.count_nfe(s, name, afs=True) == es.count_nfe(s, name) - 1


def test_afs_changes_the_first_call_only_and_graph_replay_agrees() -> None:
    gm = _gauss()
    x = torch.randn(4, 3, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 80
    s = es.karras_sigmas(4)
    wrong = es.GaussianDenoiser(MU + 1.0, SD**2)  # a deliberately wrong closed form: its effect is visible
    seen: list[float] = []
    out = es.euler_sample(gm, x, s, afs=wrong, callback=lambda info: seen.append(float(info.denoised.mean())))
    assert seen[0] == pytest.approx(float(wrong(x, torch.full((4,), 80.0, dtype=torch.float64)).mean()))
    assert seen[1] != pytest.approx(seen[0])
    again = es.euler_sample(gm, x, s, afs=wrong)  # the counter restarts on every run
    assert torch.equal(out, again)
    gs = es.GraphedSampler(gm, s, (4, 3, 2), sampler="euler", dtype=torch.float64, afs=wrong)
    assert torch.equal(gs(x), out) and torch.equal(gs(x), out)
    gen = es.generate(gm, range(4), (3, 2), s, sampler="euler", afs=wrong, dtype=torch.float64)
    assert gen.shape == (4, 3, 2)


def test_afs_true_reads_sigma_data_and_errors() -> None:
    den = es.EDMPrecond(lambda x_in, c_noise: torch.zeros_like(x_in), sigma_data=SD)
    x = torch.randn(2, 3, dtype=torch.float64) * 80
    s = es.karras_sigmas(3)
    assert torch.equal(es.euler_sample(den, x, s, afs=True), es.euler_sample(den, x, s, afs=SD))
    with pytest.raises(ValueError, match="afs=True reads the denoiser's sigma_data"):
        es.euler_sample(lambda x, s: x * 0, x, s, afs=True)
    with pytest.raises(TypeError, match="afs must be None, True"):
        es.euler_sample(den, x, s, afs="gauss")
    with pytest.raises(ValueError, match="afs must be > 0"):
        es.euler_sample(den, x, s, afs=-0.5)
    with pytest.raises(ValueError, match="not both"):
        es.GaussianDenoiser(0.0, 1.0, cov=torch.eye(3))
    with pytest.raises(ValueError, match="positive semi-definite"):
        es.GaussianDenoiser(cov=-torch.eye(3))


def test_nfe_accounting_with_afs() -> None:
    s = es.karras_sigmas(18)
    assert es.count_nfe(s, "heun", afs=0.5) == 34 and es.count_nfe(s, "heun", afs=None) == 35
    assert es.count_nfe(s, "unipc", afs=False) == 18
    assert get("unipc").steps_for(5, afs=True) == 6 and get("heun").steps_for(5, afs=True) == 3
    assert get("euler").steps_for(1, afs=True) == 2


def test_direction_scale() -> None:
    gm = _gauss()
    x = torch.randn(3, 3, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 80
    s = es.karras_sigmas(3)
    assert torch.equal(es.dpmpp_2m_sample(gm, x, s, direction_scale=[1.0] * 3), es.dpmpp_2m_sample(gm, x, s))
    # Euler with scales: x_{i+1} = x_i + (sigma_{i+1} - sigma_i) s_i (x_i - D_i) / sigma_i, written out
    sc = [1.1, 0.9, 1.0]
    want = x.clone()
    for i in range(3):
        sig = torch.full((3,), float(s[i]), dtype=torch.float64)
        want = want + (s[i + 1] - s[i]) * sc[i] * (want - gm(want, sig)) / s[i]
    assert torch.allclose(es.euler_sample(gm, x, s, direction_scale=sc), want, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="one entry per denoiser evaluation of this run \\(5"):
        es.heun_sample(gm, x, s, direction_scale=[1.0] * 3)
    with pytest.raises(TypeError, match="direction_scale must be a list of finite floats"):
        es.euler_sample(gm, x, s, direction_scale=[1.0, float("nan"), 1.0])


def test_sigma_scale() -> None:
    gm = _gauss()
    x = torch.randn(3, 3, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 80
    s = es.karras_sigmas(3)
    tk, sc = [1.0, 0.8, 1.3], [1.0, 1.2, 0.9]
    want = x.clone()
    for i in range(3):  # Euler with the k-th call at sigma t_k and its direction scaled by s_k, written out
        d = gm(want, torch.full((3,), float(s[i]) * tk[i], dtype=torch.float64))
        want = want + (s[i + 1] - s[i]) * sc[i] * (want - d) / s[i]
    got = es.euler_sample(gm, x, s, sigma_scale=tk, direction_scale=sc)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)
    assert torch.equal(es.heun_sample(gm, x, s, sigma_scale=[1.0] * 5), es.heun_sample(gm, x, s))
    with pytest.raises(ValueError, match="sigma_scale must be positive"):
        es.euler_sample(gm, x, s, sigma_scale=[1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="sigma_scale must have one entry per denoiser evaluation"):
        es.euler_sample(gm, x, s, sigma_scale=[1.0])


@pytest.mark.parametrize("name", ["euler", "heun", "dpmpp_2m", "unipc", "ipndm"])
def test_afs_from_an_infinite_first_level(name: str) -> None:
    # From sigma = inf the state is unit noise and the first evaluation is D(n; inf) = mu for Gaussian data:
    # the closed form replaces it exactly (a one-component mixture is that Gaussian: bitwise the same run), and
    # the count drops by one on top of the 1-NFE first step from inf.
    import math

    from edm_samplers import count_nfe
    from edm_samplers.evaluation import GaussianMixture
    from edm_samplers.solvers.api import sampler_function

    mu = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    data = GaussianMixture(mu[None], 0.7)
    closed = es.GaussianDenoiser(mean=mu, var=0.49)
    n = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sig = [math.inf, 5.0, 1.0, 0.2, 0.0]
    fn = sampler_function(name)
    torch.testing.assert_close(fn(data, n, sig, afs=closed), fn(data, n, sig), rtol=0, atol=1e-14)
    assert count_nfe(sig, name, afs=closed) == count_nfe(sig, name) - 1
