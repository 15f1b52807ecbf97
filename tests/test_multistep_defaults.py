"""The multistep samplers' default order rule (issue 12 item 7; the study: benchmarks/multistep_defaults.py and
docs/multistep-defaults.md).

With full order on EDM's rho = 7 schedule, DPM-Solver++(3M) and UniPC-3 were 5-7x worse than Euler at 10 NFE
on the shipped digits model (and 2M 1.3x on a 64-D mixture): the last, longest log-steps lie where the
denoiser output has saturated, and the data-form exponential integrators extrapolate a dead trend across
them. ``order_rule="auto"`` (the default) lowers the order there. Two checks: the order each step gets (exact,
transcribed from the study's table), and the statistic the study specifies on its fast problem.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import edm_samplers as es
from edm_samplers.evaluation import GaussianMixture, frechet_distance
from edm_samplers.solvers import multistep_plan
from edm_samplers.solvers.plans import MultistepPlan

DATA = ("dpmpp_2m", "dpmpp_3m", "unipc", "dpmpp_2m_sde", "dpmpp_3m_sde")
DERIVATIVE = ("deis", "lms", "ipndm")

# Orders per step on karras_sigmas(N) with default knobs (warm-up included; the last entry is the step to 0).
# N = 10 and 5: the study's table; N = 20: full order until sigma_{i+1} <= 0.1, then six first-order steps.
ORDERS: dict[int, dict[str, tuple[int, ...]]] = {
    10: {
        "dpmpp_2m": (1, 2, 2, 2, 2, 2, 2, 1, 1, 1),
        "dpmpp_3m": (1, 2, 3, 3, 3, 2, 2, 1, 1, 1),
        "unipc": (1, 2, 3, 3, 3, 2, 2, 1, 1, 1),
        "deis": (1, 2, 3, 3, 3, 3, 3, 3, 2, 1),
        "lms": (1, 2, 3, 4, 4, 4, 4, 3, 2, 1),
        "ipndm": (1, 2, 3, 4, 4, 4, 4, 3, 2, 1),
    },
    5: {
        "dpmpp_2m": (1, 2, 2, 1, 1),
        "dpmpp_3m": (1, 2, 2, 1, 1),
        "unipc": (1, 2, 2, 1, 1),
        "deis": (1, 2, 3, 2, 1),
        "lms": (1, 2, 3, 2, 1),
        "ipndm": (1, 2, 3, 2, 1),
    },
    20: {
        "dpmpp_2m": (1, *[2] * 13, *[1] * 6),
        "dpmpp_3m": (1, 2, *[3] * 12, *[1] * 6),
        "unipc": (1, 2, *[3] * 12, *[1] * 6),
        "deis": (1, 2, *[3] * 16, 2, 1),
        "lms": (1, 2, 3, *[4] * 14, 3, 2, 1),
        "ipndm": (1, 2, 3, *[4] * 14, 3, 2, 1),
    },
}
ORDERS[10] |= {"dpmpp_2m_sde": ORDERS[10]["dpmpp_2m"], "dpmpp_3m_sde": ORDERS[10]["dpmpp_3m"]}


def orders(plan: MultistepPlan) -> tuple[int, ...]:
    """The order of each step: its history columns (DEIS writes its Euler step to 0 as x = D, with none)."""
    return tuple(k or 1 for k in plan.nb)


@pytest.mark.parametrize("n", sorted(ORDERS))
def test_default_orders_per_step(n: int) -> None:
    sig = es.karras_sigmas(n)
    for name, want in ORDERS[n].items():
        assert orders(multistep_plan(sig, name)) == want, name
    # full order stays one option away; "final" is diffusers' lower_order_final
    assert multistep_plan(sig, "dpmpp_3m", order_rule="full").nb == (1, 2, *[3] * (n - 3), 1)
    assert orders(multistep_plan(sig, "lms", order_rule="final")) == ORDERS[n]["lms"]


def test_auto_uses_the_published_2m_weights_for_its_order_2_steps() -> None:
    # Exact order 2 (dpmpp_3m with order=2) is not a safe fallback on long log-steps; the published 2M
    # weights, which extrapolate half a difference, are. Under "auto" every order-2 step of 3M uses them.
    sig = es.karras_sigmas(10)
    auto, two_m = multistep_plan(sig, "dpmpp_3m"), multistep_plan(sig, "dpmpp_2m", order_rule="full")
    for i, k in enumerate(auto.nb):
        if k == 2:
            torch.testing.assert_close(torch.from_numpy(auto.b[i, :2]), torch.from_numpy(two_m.b[i, :2]),
                                       rtol=0, atol=0)  # fmt: skip


def mixture64d() -> GaussianMixture:
    """The study's fast problem: the exact denoiser of 16 Gaussians in 64-D (as in benchmarks/)."""
    g = torch.Generator().manual_seed(64)
    means = torch.randn(16, 64, generator=g, dtype=torch.float64) * 0.5
    stds = 0.05 + 0.25 * torch.rand(16, generator=g, dtype=torch.float64)
    weights = 0.5 + torch.rand(16, generator=g, dtype=torch.float64)
    return GaussianMixture(means, stds, weights)


ODE_MULTISTEP: dict[str, Callable[..., torch.Tensor]] = {
    name: getattr(es, f"{name}_sample") for name in ("dpmpp_2m", "dpmpp_3m", "unipc", "deis", "lms", "ipndm")
}


@pytest.mark.parametrize("nfe", [5, 10, 20])
def test_defaults_are_not_worse_than_euler(nfe: int) -> None:
    # The study's statistic: the Frechet distance between the samples and the converged samples from the SAME
    # noise ("paired": the shared finite-sample fluctuation cancels, so 250 samples measure the sampler's
    # distortion alone). Over 200 disjoint seed sets of 250 the worst ratio to Euler with the defaults was
    # 0.87 (lms at NFE 5; mean + 3.1 sd = 0.88, about 7 sd below 0.95); the old full-order defaults failed
    # (3M and UniPC at NFE 5 and 10 in every set, 6-15x; 2M at NFE 10 in most, median 1.10x).
    gm = mixture64d()
    x0 = es.PerSampleNoise(range(250)).randn((250, 64), dtype=torch.float64, device=torch.device("cpu")) * 80
    ref = es.heun_sample(gm, x0, es.karras_sigmas(64))
    s = es.karras_sigmas(nfe)
    euler = frechet_distance(es.euler_sample(gm, x0, s), ref)
    for name, sampler in ODE_MULTISTEP.items():
        assert es.count_nfe(s, name) == nfe
        fd = frechet_distance(sampler(gm, x0, s), ref)
        assert fd < 0.95 * euler, f"{name} at NFE {nfe}: {fd:.4g} vs Euler {euler:.4g}"
    # and the old full-order default of 3M failed this check here (why the default changed)
    if nfe in (5, 10):
        assert frechet_distance(es.dpmpp_3m_sample(gm, x0, s, order_rule="full"), ref) > euler


@pytest.mark.slow
def test_defaults_are_not_worse_than_euler_on_the_learned_digits_model() -> None:
    # The same claim on a learned denoiser, the shipped digits model (where full-order 3M and UniPC-3 were 5-7x
    # worse than Euler in Frechet distance at NFE 10): the RMS error against the converged ODE solution from
    # the same noise (Heun, 32 steps). Worst ratio to Euler measured 0.963-0.968 (lms at NFE 5) on four
    # disjoint seed sets of 32; every other sampler and NFE <= 0.9. ~7 s on one CPU thread: the network's
    # 35 + 6 x 35 evaluations per NFE budget are the cost of testing a learned model at all.
    den = es.models.digits()
    x0 = es.PerSampleNoise(range(32)).randn((32, 1, 8, 8), dtype=torch.float32, device=torch.device("cpu")) * 80
    with torch.no_grad():
        ref = es.heun_sample(den, x0, es.karras_sigmas(32))

        def rms(out: torch.Tensor) -> float:
            return float(((out - ref) ** 2).mean().sqrt())

        for nfe in (5, 10, 20):
            s = es.karras_sigmas(nfe)
            euler = rms(es.euler_sample(den, x0, s))
            for name, sampler in ODE_MULTISTEP.items():
                err = rms(sampler(den, x0, s))
                assert err < euler, f"{name} at NFE {nfe}: RMS {err:.4g} vs Euler {euler:.4g}"
            if nfe == 10:  # the old full-order default fails here (measured 1.7x Euler)
                assert rms(es.dpmpp_3m_sample(den, x0, s, order_rule="full")) > euler
