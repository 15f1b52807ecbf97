"""The calibrations shipped with the digits model (models.digits_calibration): they load, count their NFE, use
the training digits' moments, and keep the Frechet distance they were shipped with on the held-out seeds."""

from __future__ import annotations

import math

import pytest
import torch

import edm_samplers as es
from edm_samplers.models.digits import load_digits_images
from edm_samplers.solvers.api import sampler_function

pytest.importorskip("sklearn")

CONVERGED_FD = 8.548  # Heun 255 NFE on the same 898 seeds and features (docs/benchmarks.md)


def test_shipped_calibrations_load_and_count() -> None:
    assert es.models.digits_calibrations() == [3, 4]
    afs = es.models.digits_afs()
    for nfe in (3, 4):
        cal = es.models.digits_calibration(nfe)
        assert cal.nfe == nfe and cal.afs == "external"
        assert es.count_nfe(cal.sigmas, cal.sampler, afs=afs, **cal.knobs) == nfe
        assert len(cal.direction_scale or []) == len(cal.sigma_scale or []) == nfe + 1  # the closed form's too
    with pytest.raises(KeyError, match=r"available: \[3, 4\]"):
        es.models.digits_calibration(7)
    with pytest.raises(TypeError):
        es.models.digits_calibration("4")  # type: ignore[arg-type]


def test_shipped_moments_are_the_training_digits() -> None:
    shipped, fresh = es.models.digits_afs(), es.GaussianDenoiser.from_data(load_digits_images(), full_cov=True)
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 80
    sigma = torch.full((16,), 80.0, dtype=torch.float64)
    # the same float64 moments (stored exactly): the same closed form to round-off of the eigen-solver
    torch.testing.assert_close(shipped(x, sigma), fresh(x, sigma), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("nfe", "target"), [(3, 2.0), (4, 1.25)])
def test_shipped_calibration_keeps_its_frechet_distance(nfe: int, target: float) -> None:
    den, cal, afs = es.models.digits(), es.models.digits_calibration(nfe), es.models.digits_afs()
    real = load_digits_images()
    perm = torch.randperm(real.shape[0], generator=torch.Generator().manual_seed(0))
    feats_a = es.models.digits_features(real[perm[:899]])
    x0 = es.PerSampleNoise(range(898)).randn((898, 1, 8, 8), dtype=torch.float32, device=torch.device("cpu")) * 80
    run = sampler_function(cal.sampler)
    with torch.no_grad():
        out = torch.cat([run(den, xs, cal.sigmas, **cal.knobs, **cal.run_options(afs)) for xs in x0.split(300)])
    fd = es.evaluation.frechet_distance(es.models.digits_features(out.float().clamp(-1, 1)), feats_a)
    # the targets (within 2x / 1.25x of converged); shipped at 1.42x / 1.18x, so round-off across
    # machines (a few 1e-6 in the samples) leaves a wide margin
    assert math.isfinite(fd) and fd <= target * CONVERGED_FD
