"""Formula value checks that a plausible wrong formula fails (issue 11's surviving mutants).

Each test compares a public function with an independent transcription of the paper's formula written
here in plain Python/float64 (never with the library's own helpers), at settings where the formula's
every term matters: non-default rho and sigma_data, churn below its clamp with levels exactly on the
S_tmin/S_tmax bounds, mixtures with unequal component variances. ``benchmarks/mutation.py`` lists the
wrong formulas these tests are meant to kill.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

import edm_samplers as es

F64 = torch.float64


# ---- schedules -----------------------------------------------------------------------------------------


def paper_eq5(n: int, sigma_min: float, sigma_max: float, rho: float) -> list[float]:
    """EDM Eq. 5: sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, then 0."""
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    out = [(a + i / (n - 1) * (b - a)) ** rho for i in range(n - 1)] if n > 1 else []
    # i = N - 1 is exactly sigma_min (i = 0 when N = 1: sigma_max); evaluated as such, since a + (b - a)
    # cancels catastrophically when b << a.
    out.append(sigma_min if n > 1 else sigma_max)
    return [*out, 0.0]


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 40),
    sigma_min=st.floats(1e-4, 1.0),
    ratio=st.floats(1.5, 1e5),
    rho=st.floats(0.3, 15.0),
)
def test_karras_sigmas_is_eq5_for_any_rho(n: int, sigma_min: float, ratio: float, rho: float) -> None:
    sigma_max = sigma_min * ratio
    got = es.karras_sigmas(n, sigma_min, sigma_max, rho).tolist()
    want = paper_eq5(n, sigma_min, sigma_max, rho)
    assert got[-1] == 0.0
    a = sigma_max ** (1 / rho)
    for i in range(n):
        # Condition of Eq. 5 in float64: the base a + f (b - a) carries an absolute error ~ 2 ulp(a), which the
        # power turns into a relative error rho * 2 ulp(a) / base_i (large when rho < 1 and sigma_i << sigma_max).
        # 1e-13 * (1 + rho a / base_i) is ~100x that.
        base = want[i] ** (1 / rho)  # > 0: the last level is sigma_min itself
        assert got[i] == pytest.approx(want[i], rel=1e-13 * (1 + rho * a / base), abs=0.0), i


@pytest.mark.parametrize("rho", [1.0, 3.0, 12.0])
def test_karras_sigmas_rho_is_used(rho: float) -> None:
    # rho = 1 is uniform in sigma (closed form without powers); other rho differ from rho = 7 by O(1).
    got = es.karras_sigmas(6, 0.5, 10.0, rho).tolist()
    assert got == pytest.approx(paper_eq5(6, 0.5, 10.0, rho), rel=1e-12)
    if rho == 1.0:
        assert got[:-1] == pytest.approx([10.0 - 9.5 * i / 5 for i in range(6)], rel=1e-13)


def test_loglinear_and_ve_are_geometric() -> None:
    n, lo, hi = 7, 0.02, 100.0
    want = [hi * (lo / hi) ** (i / (n - 1)) for i in range(n)] + [0.0]
    assert es.loglinear_sigmas(n, lo, hi).tolist() == pytest.approx(want, rel=1e-13)
    # Table 1's VE form in t = sigma^2: t_i = sigma_max^2 (sigma_min^2 / sigma_max^2)^(i/(N-1)).
    ve = [math.sqrt(hi**2 * (lo**2 / hi**2) ** (i / (n - 1))) for i in range(n)] + [0.0]
    assert es.ve_sigmas(n).tolist() == pytest.approx(ve, rel=1e-13)


@pytest.mark.parametrize(("beta_d", "beta_min", "eps_s"), [(19.9, 0.1, 1e-3), (7.0, 0.5, 0.05)])
def test_vp_sigmas_is_table1(beta_d: float, beta_min: float, eps_s: float) -> None:
    n = 6
    t = [1 + i / (n - 1) * (eps_s - 1) for i in range(n)]
    want = [math.sqrt(math.exp(0.5 * beta_d * ti**2 + beta_min * ti) - 1) for ti in t] + [0.0]
    got = es.vp_sigmas(n, beta_d=beta_d, beta_min=beta_min, eps_s=eps_s).tolist()
    assert got == pytest.approx(want, rel=1e-12)
    # The inverse (Table 1): t(sigma) = (sqrt(beta_min^2 + 2 beta_d ln(sigma^2 + 1)) - beta_min) / beta_d.
    s = torch.tensor(want[:-1], dtype=F64)
    back = es.vp_sigma_inv(s, beta_d, beta_min).tolist()
    assert back == pytest.approx(t, rel=1e-12)


# ---- preconditioning -------------------------------------------------------------------------------------

SIGMAS = [0.002, 0.05, 0.4, 1.0, 7.0, 80.0]


class RecordingNet:
    """F(x_in, c_noise) = sin(x_in) + c_noise (broadcast); records its inputs."""

    def __init__(self) -> None:
        self.x_in: Tensor | None = None
        self.c_noise: Tensor | None = None

    def __call__(self, x_in: Tensor, c_noise: Tensor) -> Tensor:
        self.x_in, self.c_noise = x_in, c_noise
        return torch.sin(x_in) + c_noise.reshape(-1, *([1] * (x_in.ndim - 1)))


@pytest.mark.parametrize("sigma_data", [0.2, 1.0, 2.5])
def test_edm_precond_uses_sigma_data(sigma_data: float) -> None:
    net = RecordingNet()
    pre = es.EDMPrecond(net, sigma_data=sigma_data)
    x = torch.randn(len(SIGMAS), 3, 2, generator=torch.Generator().manual_seed(0), dtype=F64) * 3
    sig = torch.tensor(SIGMAS, dtype=F64)
    d = pre(x, sig)
    assert net.x_in is not None and net.c_noise is not None
    for row, s in enumerate(SIGMAS):
        # Table 1, EDM column, in scalar float64.
        c_skip = sigma_data**2 / (s**2 + sigma_data**2)
        c_out = s * sigma_data / math.sqrt(s**2 + sigma_data**2)
        c_in = 1 / math.sqrt(s**2 + sigma_data**2)
        c_noise = math.log(s) / 4
        xr = x[row]
        torch.testing.assert_close(net.x_in[row], c_in * xr, rtol=1e-14, atol=0)
        assert float(net.c_noise[row]) == pytest.approx(c_noise, rel=1e-14)
        want = c_skip * xr + c_out * (torch.sin(c_in * xr) + c_noise)
        # A handful of float64 operations on O(10) values: 1e-13 relative.
        torch.testing.assert_close(d[row], want, rtol=1e-13, atol=1e-14)
        sc = es.edm_scalings(torch.tensor(s, dtype=F64), sigma_data)
        assert [float(v) for v in sc] == pytest.approx([c_skip, c_out, c_in, c_noise], rel=1e-14)


def test_vp_ve_iddpm_wrappers_are_table1() -> None:
    x = torch.randn(len(SIGMAS), 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    sig = torch.tensor(SIGMAS, dtype=F64)
    bd, bm, m = 13.0, 0.3, 500
    net = RecordingNet()
    d = es.VPPrecond(net, beta_d=bd, beta_min=bm, M=m)(x, sig)
    for row, s in enumerate(SIGMAS):
        t = (math.sqrt(bm**2 + 2 * bd * math.log(s**2 + 1)) - bm) / bd
        c_in = 1 / math.sqrt(s**2 + 1)
        assert float(net.c_noise[row]) == pytest.approx((m - 1) * t, rel=1e-12)  # type: ignore[index]
        want = x[row] - s * (torch.sin(c_in * x[row]) + (m - 1) * t)
        torch.testing.assert_close(d[row], want, rtol=1e-12, atol=1e-12)
    d = es.VEPrecond(net)(x, sig)
    for row, s in enumerate(SIGMAS):
        want = x[row] + s * (torch.sin(x[row]) + math.log(s / 2))
        torch.testing.assert_close(d[row], want, rtol=1e-13, atol=1e-13)
    u = es.iddpm_grid(m=m).tolist()
    pre = es.iDDPMPrecond(net, M=m)
    d = pre(x, sig)
    for row, s in enumerate(SIGMAS):
        j = min(range(m), key=lambda k: abs(u[k] - s))  # nearest trained level u_0..u_{M-1}
        c_in = 1 / math.sqrt(s**2 + 1)
        assert float(net.c_noise[row]) == m - 1 - j  # type: ignore[index]
        want = x[row] - s * (torch.sin(c_in * x[row]) + (m - 1 - j))
        torch.testing.assert_close(d[row], want, rtol=1e-13, atol=1e-13)
        assert float(pre.round_sigma(torch.tensor(s, dtype=F64))) == u[j]


# ---- losses ----------------------------------------------------------------------------------------------


class RecordingDenoiser:
    def __init__(self) -> None:
        self.x: Tensor | None = None
        self.sigma: Tensor | None = None

    def __call__(self, x: Tensor, sigma: Tensor, **cond: Any) -> Tensor:
        del cond
        self.x, self.sigma = x, sigma
        return 0.5 * x + 0.1


def replay_sigmas(kind: str, g: torch.Generator, n: int) -> Tensor:
    """Table 1's training sigmas, drawn from a replay of the loss's generator (float32, as the loss draws)."""
    if kind == "edm":  # ln sigma ~ N(P_mean, P_std^2)
        return torch.exp(-0.4 + 0.7 * torch.randn(n, generator=g))
    if kind == "ve":  # ln sigma ~ U(ln sigma_min, ln sigma_max)
        return torch.exp(math.log(0.1) + (math.log(30.0) - math.log(0.1)) * torch.rand(n, generator=g))
    t = 0.01 + 0.99 * torch.rand(n, generator=g)  # VP: t ~ U(eps_t, 1), sigma = sqrt(e^(beta_d t^2/2 + beta_min t) - 1)
    return torch.sqrt(torch.expm1(0.5 * 11.0 * t**2 + 0.3 * t))


LOSSES: dict[str, Callable[[], Any]] = {
    "edm": lambda: es.training.EDMLoss(p_mean=-0.4, p_std=0.7, sigma_data=1.3),
    "ve": lambda: es.training.VELoss(sigma_min=0.1, sigma_max=30.0),
    "vp": lambda: es.training.VPLoss(beta_d=11.0, beta_min=0.3, eps_t=0.01),
}


@pytest.mark.parametrize("kind", list(LOSSES))
def test_losses_are_table1(kind: str) -> None:
    loss_fn = LOSSES[kind]()
    y = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(3))
    den = RecordingDenoiser()
    got = loss_fn(den, y, generator=torch.Generator().manual_seed(7))
    # The module's contract: sigma draws first, then the noise, from the one generator.
    g = torch.Generator().manual_seed(7)
    sigma = replay_sigmas(kind, g, 5)
    n = torch.randn(y.shape, generator=g) * sigma[:, None, None]
    assert den.sigma is not None and den.x is not None
    torch.testing.assert_close(den.sigma, sigma, rtol=1e-6, atol=0)  # float32 transcendental functions: ulps
    torch.testing.assert_close(den.x, y + n, rtol=1e-6, atol=1e-6)
    s = sigma[:, None, None].double()
    lam = (s**2 + 1.3**2) / (s * 1.3) ** 2 if kind == "edm" else 1 / s**2
    want = lam * ((0.5 * (y + n) + 0.1) - y).double() ** 2
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)  # float32 arithmetic in the loss


def test_loss_target_is_the_augmented_image() -> None:
    # With an augment pipe, y is the *augmented* image: noise is added to it, the error is measured against it,
    # and the pipe's labels condition the denoiser (non-leaky augmentation).
    y = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(3))
    labels = torch.arange(4 * 9, dtype=torch.float32).reshape(4, 9)

    def pipe(images: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        del generator  # deterministic: consumes no draws
        return 2.0 * images.flip(-1) + 1.0, labels

    seen: dict[str, Any] = {}

    def den(x: Tensor, sigma: Tensor, **cond: Any) -> Tensor:
        seen.update(cond)
        return 0.5 * x

    got = es.training.VELoss()(den, y, augment_pipe=pipe, generator=torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(9)
    sigma = torch.exp(math.log(0.02) + (math.log(100.0) - math.log(0.02)) * torch.rand(4, generator=g))
    y_aug = 2.0 * y.flip(-1) + 1.0
    n = torch.randn(y.shape, generator=g) * sigma[:, None, None]
    want = (0.5 * (y_aug + n) - y_aug) ** 2 / sigma[:, None, None] ** 2
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)  # float32 arithmetic
    assert seen["augment_labels"] is labels


def test_weights_are_table1() -> None:
    s = torch.tensor([0.01, 0.3, 2.0, 50.0], dtype=F64)
    for sd in (0.5, 1.7):
        want = [(v**2 + sd**2) / (v * sd) ** 2 for v in s.tolist()]
        assert es.training.edm_weight(s, sd).tolist() == pytest.approx(want, rel=1e-14)
        # lambda c_out^2 = 1: the network's effective weight is one.
        c_out = es.edm_scalings(s, sd).c_out
        assert (es.training.edm_weight(s, sd) * c_out**2).tolist() == pytest.approx([1.0] * 4, rel=1e-13)
    assert es.training.inverse_square_weight(s).tolist() == pytest.approx([1 / v**2 for v in s.tolist()], rel=1e-14)


# ---- exact denoisers -------------------------------------------------------------------------------------


def mixture_log_density(x: Tensor, sigma: Tensor, means: Tensor, stds: Tensor, weights: Tensor) -> Tensor:
    """log p(x; sigma) = log sum_k w_k N(x; mu_k, (s_k^2 + sigma^2) I), written out per component."""
    b = x.shape[0]
    xf = x.reshape(b, -1)
    d = xf.shape[1]
    w = weights / weights.sum()
    terms = []
    for k in range(means.shape[0]):
        var = stds[k] ** 2 + sigma**2  # [B]
        sq = ((xf - means[k].reshape(-1)) ** 2).sum(1)
        terms.append(torch.log(w[k]) - 0.5 * d * torch.log(2 * math.pi * var) - 0.5 * sq / var)
    return torch.logsumexp(torch.stack(terms, 1), 1)


def tweedie(x: Tensor, sigma: Tensor, log_p: Callable[[Tensor], Tensor]) -> Tensor:
    """D(x; sigma) = x + sigma^2 grad_x log p(x; sigma) (EDM Eq. 3), the gradient by autograd."""
    xr = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(log_p(xr).sum(), xr)
    return x + sigma.reshape(-1, *([1] * (x.ndim - 1))) ** 2 * grad


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), log_sigma=st.floats(-4.0, 4.0))
def test_gaussian_mixture_is_the_ideal_denoiser(seed: int, log_sigma: float) -> None:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(3, 2, 3, generator=g, dtype=F64)
    stds = torch.tensor([0.05, 0.4, 1.3], dtype=F64)  # unequal: the -d/2 log(var_k) term weighs components
    weights = torch.tensor([0.2, 0.5, 0.3], dtype=F64)
    gm = es.evaluation.GaussianMixture(means, stds, weights)
    sigma0 = math.exp(log_sigma)
    sigma = sigma0 * torch.tensor([1.0, 0.5, 2.0, 1.3], dtype=F64)
    y = gm.sample(4, generator=g)
    x = y + sigma[:, None, None] * torch.randn(4, 2, 3, generator=g, dtype=F64)
    want = tweedie(x, sigma, lambda z: mixture_log_density(z, sigma, means, stds, weights))
    # float64; D = x + sigma^2 grad loses |x| ~ 3 sigma of cancellation: absolute round-off ~ 1e-15 (1 + sigma).
    tol = 1e-12 * (1 + float(sigma.max()))
    torch.testing.assert_close(gm(x, sigma), want, rtol=0, atol=tol)
    torch.testing.assert_close(gm.score(x, sigma) * sigma[:, None, None] ** 2, want - x, rtol=0, atol=tol)


@pytest.mark.parametrize("seed", [0, 1])
def test_gaussian_mixture_samples_have_its_moments(seed: int) -> None:
    # Two well-separated components (means +-8, stds 0.5 / 1.5, weights 0.3 / 0.7) in 4-D, 20000 samples.
    # Every check has a margin of >= 6 standard errors (so it holds for essentially every seed; checked
    # over 1000 seeds when written): the fraction in component 1 (std err sqrt(0.21 / 2e4) = 0.0032, margin
    # 0.02), each component's per-coordinate mean (std err <= 1.5 / sqrt(6000) = 0.019, margin 0.12) and
    # pooled variance (relative std err <= sqrt(2 / (4 * 6000)) = 0.0091, margin 6 %).
    means = torch.stack([torch.full((4,), -8.0), torch.full((4,), 8.0)]).double()
    gm = es.evaluation.GaussianMixture(means, torch.tensor([0.5, 1.5], dtype=F64), [0.3, 0.7])
    y = gm.sample(20_000, generator=torch.Generator().manual_seed(seed))
    first = y.mean(1) < 0
    assert abs(float(first.double().mean()) - 0.3) < 0.02
    for part, mu, std in ((y[first], -8.0, 0.5), (y[~first], 8.0, 1.5)):
        assert float((part.mean(0) - mu).abs().max()) < 0.12
        assert float(part.var()) == pytest.approx(std**2, rel=0.06)


def test_empirical_denoiser_and_point_mass_are_ideal() -> None:
    g = torch.Generator().manual_seed(5)
    data = torch.randn(7, 4, generator=g, dtype=F64)
    sigma = torch.tensor([0.3, 1.0, 4.0], dtype=F64)
    x = torch.randn(3, 4, generator=g, dtype=F64) * 2

    def log_p(z: Tensor) -> Tensor:
        # p(x; sigma) = (1/M) sum_m N(x; y_m, sigma^2 I): the constant terms do not matter for the gradient.
        sq = ((z[:, None, :] - data[None]) ** 2).sum(-1)
        return torch.logsumexp(-0.5 * sq / sigma[:, None] ** 2, 1)

    torch.testing.assert_close(
        es.evaluation.empirical_denoiser(data)(x, sigma), tweedie(x, sigma, log_p), rtol=0, atol=1e-12
    )
    mu = torch.randn(4, generator=g, dtype=F64)
    torch.testing.assert_close(es.evaluation.PointMass(mu)(x, sigma), mu.expand(3, 4), rtol=0, atol=0)


def test_gaussian_ode_solution_solves_the_ode() -> None:
    # dx/dsigma = (x - D) / sigma with D of N(mu, s^2 I): central differences of the closed form, h = 1e-5,
    # truncation O(h^2 x''') ~ 1e-10 relative.
    mu, s = 0.3, 0.7
    x0 = torch.tensor([[2.0, -5.0, 11.0]], dtype=F64)
    gm = es.evaluation.GaussianMixture(torch.full((1, 3), mu, dtype=F64), s)
    for sig in (0.05, 0.9, 12.0):
        x = es.evaluation.gaussian_ode_solution(x0, 20.0, sig, mu, s)
        h = 1e-5 * sig
        up, down = (es.evaluation.gaussian_ode_solution(x0, 20.0, sig + sign * h, mu, s) for sign in (1, -1))
        deriv = (up - down) / (2 * h)
        torch.testing.assert_close(deriv, (x - gm(x, sig)) / sig, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(es.evaluation.gaussian_ode_solution(x0, 20.0, 20.0, mu, s), x0, rtol=1e-15, atol=0)


# ---- churn: EDM Algorithm 2 ------------------------------------------------------------------------------


def algorithm_2(
    D: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    t: list[float],
    eps: Tensor,
    *,
    s_churn: float,
    s_tmin: float,
    s_tmax: float,
    s_noise: float,
    heun: bool,
) -> list[Tensor]:
    """EDM Algorithm 2 line by line (float64); returns x_1 .. x_N. ``eps[i]`` is step i's N(0, I) draw."""
    n = len(t) - 1
    xs = []
    for i in range(n):
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= t[i] <= s_tmax else 0.0
        t_hat = t[i] + gamma * t[i]
        x_hat = x + math.sqrt(t_hat**2 - t[i] ** 2) * s_noise * eps[i]
        rows = x.shape[0]
        d = (x_hat - D(x_hat, torch.full((rows,), t_hat, dtype=F64))) / t_hat
        x_next = x_hat + (t[i + 1] - t_hat) * d
        if heun and t[i + 1] != 0:
            d2 = (x_next - D(x_next, torch.full((rows,), t[i + 1], dtype=F64))) / t[i + 1]
            x_next = x_hat + (t[i + 1] - t_hat) * (d / 2 + d2 / 2)
        xs.append(x_next)
        x = x_next
    return xs


def mixture(seed: int = 0, dim: int = 3) -> es.evaluation.GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    return es.evaluation.GaussianMixture(
        torch.randn(4, dim, generator=g, dtype=F64), torch.rand(4, generator=g, dtype=F64) * 0.4 + 0.05
    )


CHURN_CASES = {
    # gamma = 1.3 / 10 = 0.13, below the clamp sqrt(2) - 1; bounds exactly on levels 2 and 7 of the schedule.
    "below_clamp_on_bounds": {"s_churn": 1.3, "tmin_index": 7, "tmax_index": 2, "s_noise": 1.007},
    "below_clamp_everywhere": {"s_churn": 2.9, "tmin_index": None, "tmax_index": None, "s_noise": 0.9},
    "clamped": {"s_churn": 40.0, "tmin_index": 6, "tmax_index": 1, "s_noise": 1.003},
}


@pytest.mark.parametrize("case", list(CHURN_CASES))
@pytest.mark.parametrize("solver", ["heun", "euler"])
def test_stochastic_sample_is_algorithm_2(case: str, solver: str) -> None:
    c = CHURN_CASES[case]
    sig = es.karras_sigmas(10, 0.01, 40.0, dtype=F64)
    t = sig.tolist()
    s_tmin = t[c["tmin_index"]] if c["tmin_index"] is not None else 0.0  # type: ignore[index]
    s_tmax = t[c["tmax_index"]] if c["tmax_index"] is not None else math.inf  # type: ignore[index]
    gm = mixture()
    g = torch.Generator().manual_seed(11)
    x = torch.randn(5, 3, generator=g, dtype=F64) * t[0]
    eps = torch.randn(10, 5, 3, generator=g, dtype=F64)
    kw = {"s_churn": c["s_churn"], "s_tmin": s_tmin, "s_tmax": s_tmax, "s_noise": c["s_noise"]}
    ref = algorithm_2(gm, x, t, eps, heun=solver == "heun", **kw)  # type: ignore[arg-type]
    path: list[es.StepInfo] = []
    noise = es.PrecomputedNoise(eps)
    got = es.stochastic_sample(gm, x, sig, solver=solver, noise=noise, callback=path.append, **kw)  # type: ignore[arg-type]
    assert noise.index == 10  # one draw per step, in step order
    # float64, a few operations per step on O(t_0) states: 1e-12 relative to the initial scale.
    for i, info in enumerate(path):
        torch.testing.assert_close(info.x_next, ref[i], rtol=1e-12, atol=1e-12 * t[0], msg=f"step {i}")
    torch.testing.assert_close(got, ref[-1], rtol=1e-12, atol=1e-12 * t[0])
    # The same through the generalized sampler in EDM coordinates.
    gen = es.generalized_sample(gm, x, sig, solver=solver, noise=es.PrecomputedNoise(eps), **kw)  # type: ignore[arg-type]
    torch.testing.assert_close(gen, ref[-1], rtol=1e-12, atol=1e-12 * t[0])


def test_churn_gamma_reported_in_step_info() -> None:
    # sigma_hat = sigma (1 + gamma) with gamma = S_churn / N inside [S_tmin, S_tmax] (bounds inclusive), else 0.
    sig = es.karras_sigmas(8, 0.01, 40.0)
    t = sig.tolist()
    infos: list[es.StepInfo] = []
    es.stochastic_sample(
        mixture(), torch.zeros(2, 3, dtype=F64), sig, s_churn=0.8, s_tmin=t[5], s_tmax=t[1],
        noise=es.PrecomputedNoise(torch.zeros(8, 2, 3, dtype=F64)), callback=infos.append,
    )  # fmt: skip
    for i, info in enumerate(infos):
        gamma = 0.1 if 1 <= i <= 5 else 0.0
        assert info.sigma_hat == pytest.approx(t[i] * (1 + gamma), rel=1e-15), i


# ---- the generalized sampler: EDM Algorithm 1 for any sigma(t), s(t), with Algorithm 2's churn -----------


def vp_funcs(bd: float, bm: float) -> dict[str, Callable[[float], float]]:
    """VP (Table 1): sigma(t) = sqrt(e^{q(t)} - 1), q = beta_d t^2 / 2 + beta_min t; s(t) = e^{-q/2}."""

    def q(t: float) -> float:
        return 0.5 * bd * t**2 + bm * t

    return {
        "sigma": lambda t: math.sqrt(math.expm1(q(t))),
        "dsigma": lambda t: (bd * t + bm) * math.exp(q(t)) / (2 * math.sqrt(math.expm1(q(t)))),
        "inv": lambda s: (math.sqrt(bm**2 + 2 * bd * math.log1p(s**2)) - bm) / bd,
        "s": lambda t: math.exp(-0.5 * q(t)),
        "ds_over_s": lambda t: -0.5 * (bd * t + bm),
    }


VE_FUNCS: dict[str, Callable[[float], float]] = {
    "sigma": math.sqrt,
    "dsigma": lambda t: 0.5 / math.sqrt(t),
    "inv": lambda s: s**2,
    "s": lambda t: 1.0,
    "ds_over_s": lambda t: 0.0,
}


def generalized_reference(
    D: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    sigmas: list[float],
    f: dict[str, Callable[[float], float]],
    eps: Tensor,
    *,
    alpha: float,
    s_churn: float,
    s_tmin: float,
    s_tmax: float,
    s_noise: float,
) -> Tensor:
    """EDM Algorithm 1 in general form (Eq. 4 ODE in t, scaled state s(t) x, 2nd-order rule with alpha),
    with Algorithm 2's churn applied in unscaled coordinates: x_hat / s(t_hat) = x / s(t_i) + sqrt(...) eps."""
    n = len(sigmas) - 1
    sig, dsig, s, dss = f["sigma"], f["dsigma"], f["s"], f["ds_over_s"]
    t = [f["inv"](v) for v in sigmas]
    rows = x.shape[0]

    def slope(xs: Tensor, tt: float) -> Tensor:
        # dx/dt = (sigma'/sigma + s'/s) x - (sigma' s / sigma) D(x / s; sigma)
        den = D(xs / s(tt), torch.full((rows,), sig(tt), dtype=F64))
        return (dsig(tt) / sig(tt) + dss(tt)) * xs - dsig(tt) * s(tt) / sig(tt) * den

    xs = x * s(t[0])
    for i in range(n):
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= sigmas[i] <= s_tmax else 0.0
        t_hat = f["inv"](sigmas[i] + gamma * sigmas[i])
        noise_std = math.sqrt(max(sig(t_hat) ** 2 - sigmas[i] ** 2, 0.0)) * s_noise
        x_hat = s(t_hat) * (xs / s(t[i]) + noise_std * eps[i])
        h = t[i + 1] - t_hat
        d = slope(x_hat, t_hat)
        if sigmas[i + 1] > 0:
            t_p = t_hat + alpha * h
            d_p = slope(x_hat + alpha * h * d, t_p)
            xs = x_hat + h * ((1 - 1 / (2 * alpha)) * d + 1 / (2 * alpha) * d_p)
        else:
            xs = x_hat + h * d
    return xs / s(t[-1])


@pytest.mark.parametrize("alpha", [1.0, 0.5, 0.8])
@pytest.mark.parametrize("schedule", ["vp", "ve"])
def test_generalized_sample_is_algorithm_1_general_form(schedule: str, alpha: float) -> None:
    bd, bm = 15.0, 0.2
    if schedule == "vp":
        sig_t = es.vp_sigmas(8, beta_d=bd, beta_min=bm)
        f = vp_funcs(bd, bm)
        kw: dict[str, Any] = {"schedule": "vp", "scaling": "vp", "beta_d": bd, "beta_min": bm}
    else:
        sig_t = es.karras_sigmas(8, 0.02, 60.0)
        f = VE_FUNCS
        kw = {"schedule": "ve", "scaling": "none"}
    sigmas = sig_t.tolist()
    # gamma = 1.5 / 8 = 0.1875 (below the clamp), S_tmin and S_tmax exactly on levels 6 and 1.
    churn = {"s_churn": 1.5, "s_tmin": sigmas[6], "s_tmax": sigmas[1], "s_noise": 1.01}
    gm = mixture()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4, 3, generator=g, dtype=F64) * sigmas[0]
    eps = torch.randn(8, 4, 3, generator=g, dtype=F64)
    got = es.generalized_sample(gm, x, sig_t, alpha=alpha, noise=es.PrecomputedNoise(eps), **kw, **churn)
    want = generalized_reference(gm, x, sigmas, f, eps, alpha=alpha, **churn)
    # float64. The library evaluates D at the given levels, the transcription at sigma(t(level)) (a round trip of
    # ~1e-15 relative), and the VP coefficients in another algebraic form: 1e-10 relative to the state scale.
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10 * sigmas[0])
