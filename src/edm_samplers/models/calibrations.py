"""Calibrations shipped with the digits model: schedule + per-evaluation coefficients at 3 and 4 NFE.

Made by ``benchmarks/calibrated_digits.py --ship`` with :func:`edm_samplers.calibrate` (DPM-Solver++(3M), last
level free, direction scales and sigma multipliers, the analytical first step from the training digits'
mean and covariance, the feature-moment term, two starts; 128 calibration seeds that the evaluation never uses).
Measured on 898 held-out seeds (docs/benchmarks.md, "Second pass"): Frechet distance 1.42x (3 NFE) and 1.18x
(4 NFE) of the converged sampler's, where the best diffusers solver at 5 NFE is 3.6x.

Each calibration is a :func:`~edm_samplers.save_calibration` file in ``digits_calibrations/``; its ``afs`` is
the Gaussian closed form of the training digits, :func:`digits_afs` (shipped as ``digits_moments.safetensors``,
so neither scikit-learn nor the data is needed to sample).
"""

from __future__ import annotations

from pathlib import Path

from .._safetensors import load_file
from .._validate import check_int
from ..afs import GaussianDenoiser
from ..calibration_file import Calibration, load_calibration

__all__ = ["digits_afs", "digits_calibration", "digits_calibrations"]

_HERE = Path(__file__).resolve().parent
CALIBRATIONS_DIR = _HERE / "digits_calibrations"
MOMENTS_FILE = _HERE / "digits_moments.safetensors"


def digits_calibrations() -> list[int]:
    """The NFEs with a shipped calibration (e.g. ``[3, 4]``)."""
    return sorted(int(p.stem[3:]) for p in CALIBRATIONS_DIR.glob("nfe*.json"))


def digits_afs() -> GaussianDenoiser:
    """The analytical first step of the shipped calibrations: the Gaussian with the training digits' moments.

    The same object as ``GaussianDenoiser.from_data(load_digits_images(), full_cov=True)`` (its mean and
    covariance, stored in float64).
    """
    t = load_file(MOMENTS_FILE)
    return GaussianDenoiser(t["mean"], cov=t["cov"])


def digits_calibration(nfe: int) -> Calibration:
    """The shipped calibration of the digits model at ``nfe`` network evaluations.

    Example::

        import edm_samplers as es
        den, cal, afs = es.models.digits(), es.models.digits_calibration(4), es.models.digits_afs()
        imgs = es.generate(den, range(64), (1, 8, 8), cal.sigmas, sampler=cal.sampler, **cal.knobs,
                           **cal.run_options(afs))   # 4 network evaluations

    Raises:
        TypeError: a non-int ``nfe``. KeyError: no calibration at that NFE (the message lists those on offer).
    """
    n = check_int(nfe, "nfe", minimum=1)
    path = CALIBRATIONS_DIR / f"nfe{n}.json"
    if not path.is_file():
        raise KeyError(f"no shipped digits calibration at nfe={n}; available: {digits_calibrations()}")
    return load_calibration(path)
