"""The samplers against independent, readable transcriptions of EDM Algorithms 1 and 2.

The reference loops below follow the paper's pseudo-code line by line (float64, plain Python control
flow, noise drawn with the same per-seed generators); the library precomputes coefficients and uses
rearranged but algebraically identical update formulas, so the two agree to float64 round-off.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from edm_samplers import (
    PerSampleNoise,
    euler_sample,
    generate,
    heun_sample,
    iddpm_sigmas,
    karras_sigmas,
    stochastic_sample,
    vp_sigmas,
)
from edm_samplers.evaluation import GaussianMixture

Den = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def algorithm_2(
    D: Den,
    x0: torch.Tensor,
    t: list[float],
    s_churn: float,
    s_tmin: float,
    s_tmax: float,
    s_noise: float,
    randn: Callable[[], torch.Tensor],
    second_order: bool = True,
) -> torch.Tensor:
    """EDM Algorithm 2 (Algorithm 1 when s_churn = 0), as printed in the paper."""
    n = len(t) - 1
    x = x0
    for i in range(n):
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= t[i] <= s_tmax else 0.0
        eps = randn() * s_noise
        t_hat = t[i] + gamma * t[i]
        x_hat = x + math.sqrt(t_hat**2 - t[i] ** 2) * eps
        b = x.shape[0]
        d = (x_hat - D(x_hat, torch.full((b,), t_hat, dtype=x.dtype))) / t_hat
        x_next = x_hat + (t[i + 1] - t_hat) * d
        if second_order and t[i + 1] != 0:
            d2 = (x_next - D(x_next, torch.full((b,), t[i + 1], dtype=x.dtype))) / t[i + 1]
            x_next = x_hat + (t[i + 1] - t_hat) * (0.5 * d + 0.5 * d2)
        x = x_next
    return x


def mixture(dim: tuple[int, ...] = (2, 3, 3), k: int = 4, seed: int = 0) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn((k, *dim), generator=g, dtype=torch.float64)
    stds = torch.rand(k, generator=g, dtype=torch.float64) * 0.4 + 0.05
    weights = torch.rand(k, generator=g, dtype=torch.float64) + 0.2
    return GaussianMixture(means, stds, weights)


SCHEDULES = {"karras18": karras_sigmas(18), "vp12": vp_sigmas(12), "iddpm10": iddpm_sigmas(10)}


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("method", ["heun", "euler"])
def test_deterministic_matches_algorithm_1(name: str, method: str) -> None:
    gm = mixture()
    sig = SCHEDULES[name]
    x0 = torch.randn(6, 2, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * sig[0]
    sampler = heun_sample if method == "heun" else euler_sample
    got = sampler(gm, x0, sig)
    ref = algorithm_2(gm, x0, sig.tolist(), 0, 0, math.inf, 1, lambda: torch.zeros(()), method == "heun")
    # float64 round-off accumulated over ~35 evaluations of a mixture denoiser: well below 1e-12.
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["heun", "euler"])
def test_stochastic_matches_algorithm_2(method: str) -> None:
    gm = mixture()
    sig = karras_sigmas(16)
    seeds = [3, 11, 5, 8]
    shape = (len(seeds), 2, 3, 3)
    x0 = PerSampleNoise(seeds).randn(shape, dtype=torch.float64, device=torch.device("cpu")) * sig[0]
    ref_noise = PerSampleNoise(seeds)
    ref_noise.randn(shape, dtype=torch.float64, device=torch.device("cpu"))  # skip the latents draw

    def randn() -> torch.Tensor:
        return ref_noise.randn(shape, dtype=torch.float64, device=torch.device("cpu"))

    ref = algorithm_2(gm, x0, sig.tolist(), 40, 0.05, 50, 1.003, randn, method == "heun")
    got_noise = PerSampleNoise(seeds)
    got_noise.randn(shape, dtype=torch.float64, device=torch.device("cpu"))
    got = stochastic_sample(
        gm, x0, sig, s_churn=40, s_tmin=0.05, s_tmax=50, s_noise=1.003, solver=method,  # type: ignore[arg-type]
        noise=got_noise,
    )  # fmt: skip
    # Same noise values; float64 round-off only (see test above).
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    # And the one-call generate(noise="per_sample") draws latents then churn noise from the same per-seed streams.
    gen = generate(
        gm, seeds, (2, 3, 3), sig, sampler=stochastic_sample, dtype=torch.float64, noise="per_sample",
        s_churn=40, s_tmin=0.05, s_tmax=50, s_noise=1.003, solver=method,
    )  # fmt: skip
    torch.testing.assert_close(gen, ref, rtol=1e-12, atol=1e-12)


def test_float32_close_to_float64_reference() -> None:
    gm = mixture()
    sig = karras_sigmas(18)
    x0 = torch.randn(6, 2, 3, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * sig[0]
    ref = algorithm_2(gm, x0, sig.tolist(), 0, 0, math.inf, 1, lambda: torch.zeros(()))
    got = heun_sample(gm, x0.float(), sig)
    assert got.dtype == torch.float32
    # float32 state over 35 NFE on O(1) data started at sigma = 80: errors of order 80 * 1e-7 * steps.
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=2e-4)
