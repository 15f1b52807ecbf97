"""Seeds to samples: :func:`generate` (EDM's ``generate.py`` in one call) and :func:`initial_x`."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from .._types import Denoiser
from .._validate import check_has_data, check_shape, check_sigmas, check_x, state_dtype
from ..noise import CounterNoise, PerSampleNoise
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
    noise: Literal["counter", "per_sample"] = "counter",
    **knobs: Any,
) -> Tensor:
    """Sample one image per seed, like EDM's ``generate.py``: latents, scaling and sampling in one call.

    Each seed's unit latent comes from its own ``torch.Generator`` (:class:`~edm_samplers.PerSampleNoise`, EDM's
    exact initial latents) on ``device``, scaled by ``sigmas[0]`` (not scaled when it is inf: see
    :func:`initial_x`). The noise a stochastic sampler adds comes
    from :class:`~edm_samplers.CounterNoise` keyed by the same seeds (step i reads the seed's draw i, drawn for
    the whole batch at once and only on the steps that add noise), or, with ``noise="per_sample"``, from the
    latents' generators, one state-sized draw per step as EDM's ``generate.py`` does (its stochastic samples bit
    for bit, slower). Either way every sample depends only on its seed (and the device: the latents' CPU and
    CUDA generators differ). The command
    line's ``edm-samplers generate`` calls this function. Sampling runs under ``torch.no_grad()``: the
    result carries no autograd graph (call a ``*_sample`` function directly to differentiate through
    sampling).

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
        noise: ``"counter"`` or ``"per_sample"``: where a stochastic sampler's noise comes from (see above).
        **knobs: the sampler's knobs (e.g. ``s_churn=40`` for ``"stochastic"``, ``order=2`` for ``"unipc"``).

    Returns:
        Tensor ``[len(seeds), *shape]`` in ``dtype``.
    """
    fn = sampler_function(sampler)
    src = PerSampleNoise(seeds)
    shp = check_shape(shape)
    if isinstance(noise, str) and noise == "counter":
        steps_noise: CounterNoise | PerSampleNoise = CounterNoise(src.seeds)
    elif isinstance(noise, str) and noise == "per_sample":
        steps_noise = src
    else:
        raise TypeError(
            f'noise must be "counter" or "per_sample": generate() builds the noise source from seeds; do not pass '
            f"noise={type(noise).__name__}(...)"
        )
    dev = torch.device(device) if device is not None else torch.device("cpu")
    check_has_data(dev, "device")
    dtype = state_dtype(torch.empty(0), dtype)
    check_has_data(sigmas, "sigmas")
    s = check_sigmas(sigmas, allow_inf_first=True)
    with torch.no_grad():
        latents = src.randn((len(src), *shp), dtype=dtype, device=dev)
        x = latents if math.isinf(float(s[0])) else latents * s[0].to(dtype)
        return fn(denoiser, x, s, cond=cond, noise=steps_noise, dtype=dtype, **knobs)
