"""Seeds to samples: :func:`generate` (EDM's ``generate.py`` in one call) and :func:`initial_x`."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .._types import Denoiser
from .._validate import check_has_data, check_shape, check_sigmas, check_x, state_dtype
from ..noise import PerSampleNoise
from .api import sampler_function

__all__ = ["generate", "initial_x"]


def initial_x(latents: Tensor, sigmas: Tensor | Sequence[float]) -> Tensor:
    """Scale unit-variance latents to the first noise level: x_0 = latents * sigmas[0].

    The multiplication runs in float64 when ``latents`` is float64; otherwise in the promoted dtype. When
    ``sigmas[0]`` is inf (a start from pure noise) the samplers' state is the unit noise itself (the limit of
    x / sigma), so the latents are returned unscaled (in the promoted dtype).
    """
    check_x(latents, "latents")
    check_has_data(sigmas, "sigmas")
    s = check_sigmas(sigmas, allow_inf_first=True)
    dt = torch.promote_types(latents.dtype, torch.float32)
    return latents.to(dt) * _start_scale(s)


def _start_scale(s: Tensor) -> float:
    """sigmas[0], or 1 for a start at sigma = inf (the state is then the unit noise)."""
    first = float(s[0])
    return 1.0 if math.isinf(first) else first


def generate(
    denoiser: Denoiser,
    seeds: Iterable[int],
    shape: Sequence[int],
    sigmas: Tensor | Sequence[float],
    *,
    sampler: str | Callable[..., Tensor] = "heun",
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    cond: Mapping[str, Any] | None = None,
    **knobs: Any,
) -> Tensor:
    """Sample one image per seed, like EDM's ``generate.py``: latents, scaling and sampling in one call.

    Each seed gets its own generator (:class:`~edm_samplers.PerSampleNoise`) on ``device``: its unit latent
    is drawn first, scaled by ``sigmas[0]`` (not scaled when it is inf: see :func:`initial_x`), and the same
    generator feeds any noise the sampler draws, so every sample depends only on its seed (and the device: CPU
    and CUDA generators differ). The command line's ``edm-samplers generate`` calls this function. Sampling
    runs under ``torch.no_grad()``: the result carries no autograd graph (call a ``*_sample`` function
    directly to differentiate through sampling).

    Args:
        denoiser: D(x, sigma, **cond).
        seeds: one int per sample.
        shape: the shape of one sample, e.g. ``(3, 32, 32)``.
        sigmas: the schedule.
        sampler: a registry name (``"heun"``, ``"unipc"``, ...; see ``edm_samplers.solvers.registry``) or a
            sampler function with the library's signature.
        device: where to sample (default CPU).
        dtype: integration dtype (float64 reproduces the reference numerics).
        cond: keyword arguments for the denoiser.
        **knobs: the sampler's knobs (e.g. ``s_churn=40`` for ``"stochastic"``, ``order=2`` for ``"unipc"``).

    Returns:
        Tensor ``[len(seeds), *shape]`` in ``dtype``.
    """
    fn = sampler_function(sampler)
    src = PerSampleNoise(seeds)
    shp = check_shape(shape)
    if "noise" in knobs:
        raise TypeError("generate() builds the noise source from seeds; do not pass noise=")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    check_has_data(dev, "device")
    dtype = state_dtype(torch.empty(0), dtype)
    check_has_data(sigmas, "sigmas")
    s = check_sigmas(sigmas, allow_inf_first=True)
    with torch.no_grad():
        latents = src.randn((len(src), *shp), dtype=dtype, device=dev)
        x = latents if math.isinf(float(s[0])) else latents * s[0].to(dtype)
        return fn(denoiser, x, s, cond=cond, noise=src, dtype=dtype, **knobs)
