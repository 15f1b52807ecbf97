"""Models and schedules known by name to the command line (``--model``, ``--schedule``) and the benchmarks.

A :class:`Problem` is a denoiser with the shape and dtype it samples in, a feature map for statistics and,
where known, its data distribution: the closed-form mixtures ``ring2d`` and ``mixture64d``, the empirical
denoiser of the real digits and the shipped digits model. Private: the command line is the public face.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .evaluation import GaussianMixture, empirical_denoiser
from .schedules import iddpm_sigmas, karras_sigmas, loglinear_sigmas, vp_sigmas

__all__ = ["PROBLEMS", "SCHEDULES", "Problem", "digits_model", "make_sigmas"]


@dataclass
class Problem:
    """A denoiser with a known (or empirical) data distribution and a feature map for the metrics."""

    name: str
    denoiser: Callable[..., Tensor]
    shape: tuple[int, ...]
    true_samples: Callable[[int], Tensor]  # n -> [n, *shape] float64 draws of the data distribution
    features: Callable[[Tensor], Tensor]  # [n, *shape] -> [n, F] float64
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    dtype: torch.dtype = torch.float64
    exact: bool = True  # the denoiser is the exact one of the data distribution
    description: str = ""


SCHEDULES = ("karras", "loglinear", "vp", "iddpm")


def make_sigmas(name: str, steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0) -> Tensor:
    """A schedule by name: karras / loglinear (on [sigma_min, sigma_max]), vp (Table 1's), iddpm (its grid)."""
    if name == "karras":
        return karras_sigmas(steps, sigma_min, sigma_max)
    if name == "loglinear":
        return loglinear_sigmas(steps, sigma_min, sigma_max)
    if name == "vp":
        return vp_sigmas(steps)
    if name == "iddpm":
        return iddpm_sigmas(steps, sigma_min, sigma_max)
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {name!r}")


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).to(torch.float64)


def _gm_problem(name: str, gm: GaussianMixture, description: str) -> Problem:
    def truth(n: int) -> Tensor:
        return gm.sample(n, generator=torch.Generator().manual_seed(123_456))

    return Problem(name, gm, gm.sample_shape, truth, _flat, description=description)


def ring2d() -> Problem:
    """8 Gaussians (std 0.05) on the unit circle: sharp, well separated modes in 2-D."""
    ang = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    gm = GaussianMixture(torch.stack([ang.cos(), ang.sin()], 1), stds=0.05)
    return _gm_problem("ring2d", gm, "2-D: 8 Gaussians of std 0.05 on the unit circle")


def mixture64d() -> Problem:
    """16 Gaussians in 64-D with means ~ N(0, 0.25 I) and stds in [0.05, 0.3], unequal weights."""
    g = torch.Generator().manual_seed(64)
    means = torch.randn(16, 64, generator=g, dtype=torch.float64) * 0.5
    stds = 0.05 + 0.25 * torch.rand(16, generator=g, dtype=torch.float64)
    weights = 0.5 + torch.rand(16, generator=g, dtype=torch.float64)
    gm = GaussianMixture(means, stds, weights)
    return _gm_problem("mixture64d", gm, "64-D: 16 Gaussians, stds 0.05..0.3, unequal weights")


def _real_digits() -> Tensor:
    from .models.digits import load_digits_images

    data = load_digits_images()  # needs scikit-learn: loaded only when a metric needs the real data
    if not isinstance(data, Tensor):
        raise TypeError("load_digits_images() returned labels too")
    return data.to(torch.float64)


def digits_empirical() -> Problem:
    """The ideal denoiser of the 1797 real 8x8 digits (needs scikit-learn: benchmark only)."""
    data = _real_digits()
    emp = empirical_denoiser(data)

    def truth(n: int) -> Tensor:
        idx = torch.randint(0, data.shape[0], (n,), generator=torch.Generator().manual_seed(7))
        return data[idx]

    return Problem(
        "digits-empirical", emp, (1, 8, 8), truth, _flat,
        description="empirical denoiser of the 1797 real 8x8 digits (sampling returns training images)",
    )  # fmt: skip


def digits_model() -> Problem:
    """The shipped digits U-Net; truth = the real digits, metrics in the shipped classifier's features."""
    from .models import digits, digits_features

    den = digits()

    def truth(n: int) -> Tensor:
        del n  # the data set is what it is: all 1797 images
        return _real_digits()

    def model(x: Tensor, sigma: Tensor, /, **cond: Any) -> Tensor:
        out: Tensor = den(x.to(torch.float32), sigma.to(torch.float32), **cond)
        return out.to(x.dtype)

    return Problem(
        "digits-model", model, (1, 8, 8), truth, lambda x: digits_features(x.to(torch.float32)),
        dtype=torch.float32, exact=False,
        description="shipped digits U-Net; Frechet distance in the shipped classifier's 64-D features",
    )  # fmt: skip


PROBLEMS: dict[str, Callable[[], Problem]] = {
    "ring2d": ring2d,
    "mixture64d": mixture64d,
    "digits-empirical": digits_empirical,
    "digits-model": digits_model,
}
