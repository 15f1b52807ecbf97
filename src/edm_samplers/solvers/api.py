"""What every public ``<name>_sample`` function shares, generated from its registry entry.

Each public sampler is written as its signature (the method's knobs, typed, with the registry's defaults),
its own description and one line calling :func:`call`; :func:`public` adds the rest from the registry
entry: the ``Args`` lines of the knobs and of the run options every sampler takes
(:class:`RunOptions`), the shared ``Returns``/``Raises`` text, and an introspectable signature that spells
the run options out. It also checks, at import, that the signature's knobs and defaults are the
registry's, so the two cannot drift apart.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypedDict, TypeVar

import torch
from torch import Tensor

from .._types import Callback, Denoiser, NoiseSource
from .registry import get
from .runtime import RUN_OPTIONS, run

if sys.version_info >= (3, 11):
    from typing import Unpack
else:  # pragma: no cover
    from typing_extensions import Unpack

__all__ = ["RunOptions", "Sigmas", "Unpack", "call", "public", "sampler_function"]

Sigmas = Tensor | Sequence[float]
_F = TypeVar("_F", bound=Callable[..., Tensor])


class RunOptions(TypedDict, total=False):
    """The keyword arguments every sampler takes besides its knobs (see :func:`public` for their docs)."""

    cond: Mapping[str, Any] | None
    noise: NoiseSource | torch.Generator | None
    callback: Callback | None
    dtype: torch.dtype | None
    progress: bool
    check_finite: bool
    afs: object
    direction_scale: Sequence[float] | None
    sigma_scale: Sequence[float] | None


def _text(annotation: object) -> object:
    """An annotation as the text written in the source (TypedDict keeps them as ForwardRefs)."""
    return getattr(annotation, "__forward_arg__", annotation)


_RUN_DEFAULTS = {"cond": None, "noise": None, "callback": None, "dtype": None, "progress": False, "check_finite": True,
                 "afs": None, "direction_scale": None, "sigma_scale": None}  # fmt: skip
# Spelled out in each sampler's introspectable signature (help(), IDEs), typed as in RunOptions.
_RUN_PARAMS = [
    inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=_RUN_DEFAULTS[k], annotation=_text(t))
    for k, t in RunOptions.__annotations__.items()
]

_HEAD = """
    Args:
        denoiser: D(x, sigma, **cond) with sigma of shape ``[batch]``.
        x: initial state at noise level ``sigmas[0]``, any shape ``[batch, ...]``; when ``sigmas[0]`` is inf
            (a start from pure noise), the unit-variance noise n itself (the limit of x / sigma), which the first
            step passes to the denoiser at sigma = inf.
        sigmas: {schedule}, e.g. :func:`~edm_samplers.karras_sigmas`; zero only at the end, inf only at the start
            (the first step is then the exact limit of the method's step as sigmas[0] -> inf, or the first-order
            step D(n; inf) + sigmas[1] n where that limit needs more than evaluations of D; docs/api.md)."""

_RUN_DOC = """
        cond: keyword arguments passed to every denoiser call (class labels, ...).
        noise: NoiseSource (e.g. :class:`~edm_samplers.PerSampleNoise`), ``torch.Generator`` or None (torch's
            global RNG). {noise}
        callback: called with a :class:`~edm_samplers.StepInfo` after each step.
        dtype: integration dtype (default: x's dtype promoted to at least float32; float64 reproduces the
            paper's reference numerics).
        progress: show a tqdm progress bar.
        check_finite: raise ``FloatingPointError`` if the result holds NaN/Inf (one sync at the end).
        afs: analytical first step: the first denoiser call returns a closed form instead of the network
            (a :class:`~edm_samplers.GaussianDenoiser`, a float sigma_data, or True for the denoiser's
            ``sigma_data``); the network runs ``count_nfe(sigmas, name, afs=...)`` times.
        direction_scale: one float per denoiser evaluation (in call order): D_k -> x - s_k (x - D_k), the
            per-step direction scale fitted by :func:`~edm_samplers.calibrate`.
        sigma_scale: one positive float per denoiser evaluation: the k-th call sees sigma t_k instead of sigma
            (a time-shift correction, fitted by :func:`~edm_samplers.calibrate`).

    Returns:
        The state at ``sigmas[-1]`` (the sample when it is 0), in the integration dtype. Autograd follows
        the caller's grad mode: gradients flow through sampling to ``x``, the denoiser's parameters and
        ``cond`` unless the call runs under ``torch.no_grad()`` (:func:`~edm_samplers.generate` does).

    Raises:
        TypeError / ValueError: invalid arguments (named, with the valid values), or a denoiser output of
            the wrong shape.
        FloatingPointError: if ``check_finite`` and the result is not finite.

    Registry name ``"{name}"``: ``generate(..., sampler="{name}")``,
    ``GraphedSampler(..., sampler="{name}")``, ``count_nfe(sigmas, "{name}")``,
    ``edm-samplers generate --sampler {name}``.
"""


def public(name: str) -> Callable[[_F], _F]:
    """Complete the public sampler of registry entry ``name``: docs, introspectable signature, checked knobs."""
    spec = get(name)

    def decorate(fn: _F) -> _F:
        sig = inspect.signature(fn)
        own = [p for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
        declared = [(p.name, p.default) for p in own]
        if declared != [(k.name, k.default) for k in spec.knobs]:
            raise RuntimeError(f"{fn.__name__}'s knobs {declared} differ from the registry's {spec.defaults()}")
        positional = [p for p in sig.parameters.values() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
        fn.__signature__ = sig.replace(parameters=[*positional, *own, *_RUN_PARAMS])  # type: ignore[attr-defined]
        schedule = "strictly decreasing schedule" if spec.strict else "non-increasing schedule"
        noise = (
            "Draws one state-shaped tensor per step that adds noise (a stream: every step)."
            if spec.stochastic
            else "Unused: the method draws nothing."
        )
        knobs = "".join(f"\n        {k.doc_line()}" for k in spec.knobs)
        head = _HEAD.format(schedule=schedule)
        fn.__doc__ = (fn.__doc__ or "").rstrip() + "\n" + head + knobs + _RUN_DOC.format(noise=noise, name=name)
        return fn

    return decorate


def call(name: str, denoiser: Denoiser, x: Tensor, sigmas: Sigmas, options: Mapping[str, Any], **knobs: Any) -> Tensor:
    """Run registry entry ``name``: what the body of every public sampler is."""
    return run(get(name), denoiser, x, sigmas, knobs, options)


def sampler_function(sampler: str | Callable[..., Tensor]) -> Callable[..., Tensor]:
    """``sampler(denoiser, x, sigmas, **knobs_and_run_options)`` for a registry name or a sampler callable.

    A name is looked up in the registry (a ``ValueError`` lists the names); its knobs and the run options
    (:class:`RunOptions`) are told apart by name. A callable is returned as is.
    """
    if callable(sampler):
        return sampler
    if not isinstance(sampler, str):
        raise TypeError(f"sampler must be a registry name such as 'heun' or a sampler function, got {sampler!r}")
    spec = get(sampler)

    def fn(denoiser: Denoiser, x: Tensor, sigmas: Sigmas, **kwargs: Any) -> Tensor:
        options = {k: kwargs.pop(k) for k in RUN_OPTIONS if k in kwargs}
        return run(spec, denoiser, x, sigmas, kwargs, options)

    fn.__name__ = fn.__qualname__ = f"{sampler}_sample"
    return fn
