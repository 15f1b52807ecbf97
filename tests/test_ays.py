"""The published Align-Your-Steps schedules: the 10-step lists as published, and the published log-linear
interpolation to other step counts (an independent transcription of NVIDIA's ``loglinear_interp`` in numpy)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import edm_samplers as es

# NVIDIA's AYS page (howto.html) as printed: three decimals; SVD as published.
PUBLISHED_3DP = {
    "sd15": [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029],
    "sdxl": [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029],
    "svd": [700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002],
}


def _nvidia_loglinear_interp(t_steps: list[float], num_steps: int) -> np.ndarray:
    # The published recipe, transcribed: np.interp of log sigma on linspace(0, 1).
    xs = np.linspace(0, 1, len(t_steps))
    ys = np.log(np.asarray(t_steps, dtype=np.float64)[::-1])
    new_ys = np.interp(np.linspace(0, 1, num_steps), xs, ys)
    return np.exp(new_ys)[::-1].copy()


@pytest.mark.parametrize("model", ["sd15", "sdxl", "svd"])
def test_ten_steps_reproduce_the_published_list(model: str) -> None:
    s = es.ays_sigmas(model)
    assert s.dtype == torch.float64 and s.numel() == 11 and float(s[-1]) == 0.0
    # The published 3-decimal values, to their rounding (half a unit in the last printed place).
    assert torch.allclose(s[:-1], torch.tensor(PUBLISHED_3DP[model][:-1], dtype=torch.float64), rtol=0, atol=5e-4)
    # The stored levels themselves, bit for bit (the published list, last level -> 0 as diffusers writes it).
    assert s[:-1].tolist() == list(es.AYS_SIGMAS[model][:-1]) == PUBLISHED_3DP[model][:-1]


@pytest.mark.parametrize("model", ["sd15", "sdxl"])
def test_published_timesteps_are_the_discrete_levels_nearest_the_published_sigmas(model: str) -> None:
    # SD 1.5 / SDXL: scaled-linear betas sqrt-spaced from 0.00085 to 0.012 over 1000 steps (their scheduler config).
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    sig = es.sigmas_from_alphas_cumprod(torch.cumprod(1 - betas, 0))
    published = torch.tensor(es.AYS_SIGMAS[model], dtype=torch.float64)
    nearest = (sig.log()[None, :] - published.log()[:, None]).abs().argmin(1)
    # Within one timestep (SD 1.5's 0.399 lies between t = 124 and 125; the page lists 124).
    assert (nearest - torch.tensor(es.AYS_TIMESTEPS[model])).abs().max() <= 1


@pytest.mark.parametrize("model", ["sd15", "sdxl", "svd"])
@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 9, 11, 20, 50])
def test_other_step_counts_follow_the_published_interpolation(model: str, n: int) -> None:
    s = es.ays_sigmas(model, n)
    assert s.numel() == n + 1 and float(s[-1]) == 0.0
    if n >= 1:
        ref = _nvidia_loglinear_interp(list(es.AYS_SIGMAS[model]), n + 1)
        ref[-1] = 0.0
        np.testing.assert_allclose(s.numpy(), ref, rtol=1e-13, atol=0)  # exp/log round-off only
    assert float(s[0]) == es.AYS_SIGMAS[model][0]  # sigma_max kept exactly
    assert bool((s[1:] < s[:-1]).all())


@given(
    # Neighbouring levels at least 1e-6 apart in log sigma: strictly decreasing output needs room between them
    # (levels a few ulps apart cannot hold 40 distinct interpolated floats; real schedules are far apart).
    levels=st.lists(st.floats(-6, 6), min_size=2, max_size=12, unique=True)
    .map(lambda v: sorted((float(np.exp(x)) for x in v), reverse=True))
    .filter(lambda lv: all(np.log(a) - np.log(b) > 1e-6 for a, b in itertools.pairwise(lv))),
    n=st.integers(2, 40),
)
def test_loglinear_interp_properties(levels: list[float], n: int) -> None:
    out = es.loglinear_interp(levels, n)
    assert out.numel() == n
    assert float(out[0]) == levels[0] and float(out[-1]) == levels[-1]  # endpoints kept
    assert bool((out[1:] < out[:-1]).all())  # monotone
    np.testing.assert_allclose(out.numpy(), _nvidia_loglinear_interp(levels, n), rtol=1e-12)
    # log-linear in the index: on each published interval, equally spaced new points have equal log steps
    if n == 2 * (len(levels) - 1) + 1:  # midpoints: the geometric mean of the neighbours
        mids = out[1::2].numpy()
        np.testing.assert_allclose(mids, np.sqrt(np.array(levels[:-1]) * np.array(levels[1:])), rtol=1e-12)


def test_same_count_is_identity() -> None:
    lv = list(es.AYS_SIGMAS["sd15"])
    assert torch.allclose(es.loglinear_interp(lv, len(lv)), torch.tensor(lv, dtype=torch.float64), rtol=1e-15)


def test_dtype_device_and_errors() -> None:
    assert es.ays_sigmas("sdxl", 8, dtype=torch.float32).dtype == torch.float32
    with pytest.raises(ValueError, match=r"model must be one of \['sd15', 'sdxl', 'svd'\]"):
        es.ays_sigmas("sd2")
    with pytest.raises(ValueError, match="num_steps must be >= 1"):
        es.ays_sigmas("sd15", 0)
    with pytest.raises(TypeError, match="num_steps must be an int"):
        es.ays_sigmas("sd15", 10.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="strictly decreasing"):
        es.loglinear_interp([1.0, 1.0, 0.5], 4)
    with pytest.raises(ValueError, match="num_points must be >= 2"):
        es.loglinear_interp([1.0, 0.5], 1)


def test_diffusers_ays_schedules_agree() -> None:
    sched = pytest.importorskip("diffusers.schedulers.scheduling_utils")
    table = sched.AysSchedules
    for model, key in (("sd15", "StableDiffusion"), ("sdxl", "StableDiffusionXL")):
        assert list(es.AYS_TIMESTEPS[model][:-1]) == table[f"{key}Timesteps"]
    for model, key in (("sd15", "StableDiffusionSigmas"), ("sdxl", "StableDiffusionXLSigmas"),
                       ("svd", "StableDiffusionVideoSigmas")):  # fmt: skip
        assert es.ays_sigmas(model).tolist() == table[key]  # the same published numbers
