"""Protocols and records shared across the package.

A *denoiser* is the paper's D(x; sigma): given a noisy batch ``x`` and per-row noise levels ``sigma``
(shape ``[batch]``), it returns the estimate of the clean data, same shape as ``x``. Any callable with
that contract works: a preconditioned network, an adapter around an existing model, or one of the
closed-form denoisers of :mod:`edm_samplers.evaluation`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = ["Callback", "Denoiser", "NoiseSource", "StepInfo"]


@runtime_checkable
class Denoiser(Protocol):
    """D(x; sigma): ``denoiser(x, sigma, **cond) -> Tensor`` with ``sigma`` of shape ``[x.shape[0]]``."""

    def __call__(self, x: Tensor, sigma: Tensor, /, **cond: Any) -> Tensor: ...


@runtime_checkable
class NoiseSource(Protocol):
    """A source of independent standard-normal draws.

    ``randn(shape, dtype=..., device=...)`` returns a fresh tensor of N(0, 1) samples. The first
    dimension of ``shape`` is the batch; sources such as :class:`~edm_samplers.PerSampleNoise` use it to
    keep every row's draws independent of the other rows.
    """

    def randn(self, shape: Sequence[int], *, dtype: torch.dtype, device: torch.device) -> Tensor: ...


class StepInfo(NamedTuple):
    """What a sampler reports to ``callback`` after each step ``i`` (0-based).

    ``x`` is the state the denoiser was evaluated on (at noise level ``sigma_hat``: equal to ``sigma``
    unless the step added churn noise), ``denoised`` is D(x; sigma_hat), and ``x_next`` is the state
    at ``sigma_next``. Noise levels are Python floats taken from the schedule (no device sync). On the first
    step of a schedule starting at inf, ``sigma`` and ``sigma_hat`` are inf and ``x`` is the unit noise the
    denoiser saw (docs/api.md, "Starting at sigma = inf").
    """

    i: int
    sigma: float
    sigma_hat: float
    sigma_next: float
    x: Tensor
    denoised: Tensor
    x_next: Tensor


class Callback(Protocol):
    """``callback(info)`` receives a :class:`StepInfo` after every step; its return value is ignored."""

    def __call__(self, info: StepInfo, /) -> object: ...
