"""CFG++ samplers (euler_cfgpp, dpmpp_2m_cfgpp): closed forms on analytic denoisers, an independent float64
transcription of each update, the reduction to the plain samplers, the guidance interval, errors, NFE."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import Tensor

import edm_samplers as es
from edm_samplers import count_nfe, dpmpp_2m_cfgpp_sample, euler_cfgpp_sample, guided, karras_sigmas
from edm_samplers.evaluation import GaussianMixture
from strategies import schedules


class ClassMixture:
    """A class-conditional exact denoiser: class k is the Gaussian mixture ``gms[k]``; label ``len(gms)`` is
    the unconditional data (all classes pooled). Counts calls and rows, like a network would."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(3)
        self.means = torch.randn(3, 2, 2, generator=g, dtype=torch.float64) * 2  # 3 classes x 2 modes, 2-D data
        self.gms = [GaussianMixture(m, 0.3) for m in self.means]
        self.uncond = GaussianMixture(self.means.reshape(6, 2), 0.3)
        self.calls: list[int] = []

    def __call__(self, x: Tensor, sigma: Tensor, /, class_labels: Tensor) -> Tensor:
        self.calls.append(x.shape[0])
        outs = torch.stack([gm(x, sigma) for gm in [*self.gms, self.uncond]])  # [K + 1, B, 2]
        return outs[class_labels, torch.arange(x.shape[0])]


def _setup(batch: int = 6) -> tuple[ClassMixture, Tensor, dict[str, Any], dict[str, Any]]:
    net = ClassMixture()
    x = torch.randn(batch, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 80
    labels = torch.arange(batch) % 3
    cond = {"class_labels": labels}
    return net, x, cond, {"class_labels": torch.full_like(labels, 3)}


# ---- independent transcriptions (float64, one formula per step, written from the paper's update) -------------


def euler_cfgpp_reference(cond_d: Any, uncond_d: Any, x: Tensor, sigmas: list[float], lam: float) -> Tensor:
    """DDIM/Euler CFG++: x0 = D_u + lam (D_c - D_u); x_next = x0 + sigma_next * eps_u, eps_u = (x - D_u) / sigma."""
    for s, s_next in itertools.pairwise(sigmas):
        sig = torch.full((x.shape[0],), s, dtype=torch.float64)
        d_c, d_u = cond_d(x, sig), uncond_d(x, sig)
        x0 = d_u + lam * (d_c - d_u)
        eps_u = (x - d_u) / s
        x = x0 + s_next * eps_u
    return x


def dpmpp_2m_cfgpp_reference(
    cond_d: Any, uncond_d: Any, x: Tensor, sigmas: list[float], lam: float, low_order_below: float = 0.0
) -> Tensor:
    """DPM-Solver++(2M) CFG++ (the authors' DPMpp2mCFGppSolver in formulas): t = -log sigma, h = t_next - t;
    first step / step to 0 (and, for order_rule="auto", steps landing on sigma <= 0.1): Euler CFG++; else
    x_next = D + e^{-h} (x - D_u) + (1 - e^{-h}) / (2 r) (D - D_u,prev), r = h_prev / h."""
    old_u = None
    for i, (s, s_next) in enumerate(itertools.pairwise(sigmas)):
        sig = torch.full((x.shape[0],), s, dtype=torch.float64)
        d_c, d_u = cond_d(x, sig), uncond_d(x, sig)
        d = d_u + lam * (d_c - d_u)
        if old_u is None or s_next == 0 or s_next <= low_order_below:
            x_next = d + (s_next / s) * (x - d_u)
        else:
            h = math.log(s / s_next)
            r = math.log(sigmas[i - 1] / s) / h
            x_next = d + math.exp(-h) * (x - d_u) + (1 - math.exp(-h)) / (2 * r) * (d - old_u)
        old_u, x = d_u, x_next
    return x


@pytest.mark.parametrize("lam", [0.0, 0.4, 1.0, 2.5])
@pytest.mark.parametrize("n", [1, 2, 7])
def test_euler_cfgpp_matches_transcription(lam: float, n: int) -> None:
    net, x, cond, null = _setup()
    sig = karras_sigmas(n, dtype=torch.float64)
    g = guided(net, net, lam, guide_cond=null)
    out = euler_cfgpp_sample(g, x, sig, cond=cond, dtype=torch.float64)

    def cond_d(xx: Tensor, s: Tensor) -> Tensor:
        return net(xx, s, class_labels=cond["class_labels"])

    def uncond_d(xx: Tensor, s: Tensor) -> Tensor:
        return net(xx, s, class_labels=null["class_labels"])

    want = euler_cfgpp_reference(cond_d, uncond_d, x, sig.tolist(), lam)
    # float64 throughout; lerp vs the textbook combination differ by a few ulps of |x| <= 80 per step.
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-11)


@pytest.mark.parametrize("lam", [0.0, 0.6, 1.0, 3.0])
@pytest.mark.parametrize(("n", "rule"), [(1, "full"), (2, "full"), (8, "full"), (8, "auto"), (12, "auto")])
def test_dpmpp_2m_cfgpp_matches_transcription(lam: float, n: int, rule: str) -> None:
    net, x, cond, null = _setup()
    sig = karras_sigmas(n, dtype=torch.float64)
    g = guided(net, net, lam, guide_cond=null)
    out = dpmpp_2m_cfgpp_sample(g, x, sig, cond=cond, dtype=torch.float64, order_rule=rule)  # type: ignore[arg-type]

    def cond_d(xx: Tensor, s: Tensor) -> Tensor:
        return net(xx, s, class_labels=cond["class_labels"])

    def uncond_d(xx: Tensor, s: Tensor) -> Tensor:
        return net(xx, s, class_labels=null["class_labels"])

    low = 0.1 if rule == "auto" else 0.0  # plans.LOW_ORDER_SIGMA (karras h <= 1 here, so no other rule applies)
    want = dpmpp_2m_cfgpp_reference(cond_d, uncond_d, x, sig.tolist(), lam, low_order_below=low)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-11)  # float64, a few ulps per step


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m"])
@pytest.mark.parametrize("rule", ["auto", "full", "final"])
def test_equal_estimates_give_the_plain_sampler(sampler: str, rule: str) -> None:
    # D_c = D_u: a guide equal to the main model (any lambda), or lambda applied to identical estimates.
    gm = GaussianMixture(torch.tensor([[1.0, -1.0], [-2.0, 0.5]], dtype=torch.float64), 0.2)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 80
    sig = karras_sigmas(9, dtype=torch.float64)
    knobs: dict[str, Any] = {} if sampler == "euler" else {"order_rule": rule}
    plain = getattr(es, f"{sampler}_sample")(gm, x, sig, **knobs)
    for lam in (0.0, 0.7, 2.0):
        cfgpp = getattr(es, f"{sampler}_cfgpp_sample")(guided(gm, gm, lam), x, sig, **knobs)
        # Same plan coefficients, regrouped (a (x - D) + (a + b0) D vs a x + b0 D): float64 round-off.
        torch.testing.assert_close(cfgpp, plain, rtol=1e-12, atol=1e-11)


def test_lambda_zero_is_unconditional_sampling_and_interval_off_is_plain() -> None:
    net, x, cond, null = _setup()
    sig = karras_sigmas(6, dtype=torch.float64)
    uncond = es.euler_sample(net, x, sig, cond=null)
    out = euler_cfgpp_sample(guided(net, net, 0.0, guide_cond=null), x, sig, cond=cond)
    torch.testing.assert_close(out, uncond, rtol=1e-12, atol=1e-11)  # float64 round-off
    # No sigma of the schedule inside the interval: the guided denoiser is D_main everywhere, CFG++ is Euler.
    g = guided(net, net, 0.6, guide_cond=null, sigma_interval=(1000.0, 2000.0))
    torch.testing.assert_close(
        euler_cfgpp_sample(g, x, sig, cond=cond), es.euler_sample(net, x, sig, cond=cond), rtol=1e-12, atol=1e-11
    )
    # Interval in "mask" mode (what compiled / graphed sampling uses) gives the same values as "host".
    for mode in ("host", "mask"):
        gi = guided(net, net, 0.6, guide_cond=null, sigma_interval=(0.5, 10.0), interval_check=mode)  # type: ignore[arg-type]
        outs = dpmpp_2m_cfgpp_sample(gi, x, sig, cond=cond)
        if mode == "host":
            ref = outs
    torch.testing.assert_close(outs, ref, rtol=0, atol=0)


def test_one_batched_call_per_step_and_count_nfe() -> None:
    net, x, cond, null = _setup(batch=4)
    sig = karras_sigmas(5, dtype=torch.float64)
    for name in ("euler_cfgpp", "dpmpp_2m_cfgpp"):
        net.calls.clear()
        getattr(es, f"{name}_sample")(guided(net, net, 1.0, guide_cond=null), x, sig, cond=cond)
        # w = 1 still evaluates the guide (CFG++ renoises with it): one call of batch 2B per step.
        assert net.calls == [8] * 5 and count_nfe(sig, name) == 5


def test_generate_and_graphed_sampler_take_the_registry_entry() -> None:
    net, _, cond, null = _setup(batch=4)
    sig = karras_sigmas(5, dtype=torch.float64)
    g = guided(net, net, 0.5, guide_cond=null)
    out = es.generate(g, range(4), (2,), sig, sampler="dpmpp_2m_cfgpp", cond=cond, dtype=torch.float64)
    latents = torch.stack([torch.randn(2, generator=torch.Generator().manual_seed(s)) for s in range(4)])
    x = es.initial_x(latents, sig).double()
    assert out.shape == (4, 2) and bool(torch.isfinite(out).all())
    graphed = es.GraphedSampler(g, sig, (4, 2), sampler="euler_cfgpp", cond_example=cond, dtype=torch.float64)
    # On CPU the graphed sampler runs the same prepared loop eagerly: identical values.
    torch.testing.assert_close(graphed(x, cond=cond), euler_cfgpp_sample(g, x, sig, cond=cond, dtype=torch.float64))


def test_plain_denoiser_and_bad_schedules_are_rejected() -> None:
    gm = GaussianMixture(torch.zeros(1, 2, dtype=torch.float64), 0.5)
    x = torch.randn(2, 2, dtype=torch.float64)
    for fn in (euler_cfgpp_sample, dpmpp_2m_cfgpp_sample):
        with pytest.raises(TypeError, match=r"_cfgpp_sample needs a guided denoiser .* got GaussianMixture"):
            fn(gm, x, karras_sigmas(3))
        with pytest.raises(ValueError, match="strictly decreasing"):
            fn(guided(gm, gm, 0.5), x, [2.0, 1.0, 1.0, 0.0])
    with pytest.raises(TypeError, match="unknown option"):
        euler_cfgpp_sample(guided(gm, gm, 0.5), x, karras_sigmas(3), order_rule="full")  # type: ignore[call-arg]


def test_command_line_names_the_missing_guidance() -> None:
    from edm_samplers.cli import main

    args = ["generate", "--model", "ring2d", "--seeds", "0-1", "--sampler", "euler_cfgpp", "--steps", "3"]
    with pytest.raises(SystemExit, match="--sampler euler_cfgpp needs a guided denoiser"):
        main(args)


@settings(max_examples=25, deadline=None)
@given(sig=schedules(), lam=st.floats(-1.0, 4.0), two_m=st.booleans())
def test_any_schedule_matches_transcription(sig: Tensor, lam: float, two_m: bool) -> None:
    # Any strictly decreasing schedule (levels e^-6 .. e^4.5, optionally ending in 0) whose log steps are not
    # ulp-close (2M weighs D differences by 1 / (2r), r = h_{i-1} / h_i: near-repeated levels make any
    # transcription ill-conditioned, for plain 2M alike), any lambda.
    pos = sig[sig > 0].log()
    assume(pos.numel() < 2 or float((pos[:-1] - pos[1:]).min()) > 1e-3)
    net, x, cond, null = _setup(batch=3)
    x = x / 80 * float(sig[0])  # the state at sigmas[0]
    g = guided(net, net, lam, guide_cond=null)

    def cond_d(xx: Tensor, s: Tensor) -> Tensor:
        return net(xx, s, class_labels=cond["class_labels"])

    def uncond_d(xx: Tensor, s: Tensor) -> Tensor:
        return net(xx, s, class_labels=null["class_labels"])

    if two_m:
        out = dpmpp_2m_cfgpp_sample(g, x, sig, cond=cond, order_rule="full")
        want = dpmpp_2m_cfgpp_reference(cond_d, uncond_d, x, sig.tolist(), lam)
    else:
        out = euler_cfgpp_sample(g, x, sig, cond=cond)
        want = euler_cfgpp_reference(cond_d, uncond_d, x, sig.tolist(), lam)
    # float64, <= 13 steps; 1 / (2r) <= 10.5 / 2e-3 ~ 5e3 amplifies the ulps of D differences: ~1e-12 of |x|.
    torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-10 * max(1.0, float(sig[0])))


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m"])
def test_start_at_infinity_is_the_limit(sampler: str) -> None:
    # From sigma_0 = inf (x = unit noise n) the first step is the limit of a (x_0 - D_u) + D with x_0 = sigma_0 n,
    # a = sigma_1 / sigma_0: D_0 + sigma_1 n (D_u drops out); after it, 2M's ratio r = h_prev / h is infinite and
    # its history term vanishes. Checked against the transcriptions written out for that limit, and against a
    # finite start sigma_0 = 1e9 with x_0 = 1e9 n: Euler's first step converges at O(1/sigma_0) (1e-9 relative,
    # 1e-6 allowed); 2M's second step only like 1/ln(sigma_0) (the 1/(2r) term), so it is compared with the limit.
    main = GaussianMixture(torch.tensor([[1.0, -1.0], [-2.0, 0.5]], dtype=torch.float64), 0.2)
    guide = GaussianMixture(torch.tensor([[0.5, 0.0], [-1.0, 1.5]], dtype=torch.float64), 0.3)
    n = torch.randn(4, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    tail = [5.0, 1.0, 0.2, 0.0]
    lam = 0.8
    fn = getattr(es, f"{sampler}_cfgpp_sample")
    knobs: dict[str, Any] = {} if sampler == "euler" else {"order_rule": "full"}
    got = fn(guided(main, guide, lam), n, [math.inf, *tail], **knobs)
    inf = torch.full((4,), math.inf, dtype=torch.float64)
    d0 = guide(n, inf) + lam * (main(n, inf) - guide(n, inf))
    x1 = d0 + tail[0] * n
    rest = euler_cfgpp_reference if sampler == "euler" else dpmpp_2m_cfgpp_reference
    if sampler == "euler":
        want = rest(main, guide, x1, tail, lam)
    else:  # step 2 from the limit: r = inf removes the history term, so it is the Euler CFG++ step; then 2M
        x2 = euler_cfgpp_reference(main, guide, x1, tail[:2], lam)
        sig1 = torch.full((4,), tail[1], dtype=torch.float64)
        old_u = guide(x1, torch.full((4,), tail[0], dtype=torch.float64))
        d1 = guide(x2, sig1) + lam * (main(x2, sig1) - guide(x2, sig1))
        h, r = math.log(tail[1] / tail[2]), math.log(tail[0] / tail[1]) / math.log(tail[1] / tail[2])
        x3 = d1 + math.exp(-h) * (x2 - guide(x2, sig1)) + (1 - math.exp(-h)) / (2 * r) * (d1 - old_u)
        sig2 = torch.full((4,), tail[2], dtype=torch.float64)
        # the last step to 0 returns the guided D exactly
        want = guide(x3, sig2) + lam * (main(x3, sig2) - guide(x3, sig2))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-11)  # float64 regroupings: a few ulps per step
    if sampler == "euler":
        far = fn(guided(main, guide, lam), n * 1e9, [1e9, *tail])
        torch.testing.assert_close(far, got, rtol=1e-6, atol=1e-6)
