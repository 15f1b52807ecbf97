"""Guidance: two denoisers combined into one, D = D_guide + w (D_main - D_guide).

- Classifier-free guidance (Ho & Salimans 2022): ``guide`` is the same network without its condition
  (pass ``guide_cond={"class_labels": None}`` or whatever "unconditional" means for the network).
- Autoguidance (Karras et al. 2024): ``guide`` is a smaller or less-trained version of the main model,
  called with the same condition.

w = 1 returns D_main (no guidance) and w = 0 returns D_guide. An optional ``sigma_interval`` = (lo, hi)
restricts guidance to lo <= sigma <= hi (Kynkaanniemi et al. 2024); outside it D = D_main.

Cost and graph-friendliness. w is a Python float fixed at construction, so ``w == 1`` is decided once:
the guided denoiser then *is* one call of ``main``. The interval is data-dependent (sigma is a device
tensor); three ways to honour it, all giving the same values:

- ``interval_check="auto"`` (default): the "host" check whenever a host read is allowed, the "mask"
  blend while ``torch.compile`` traces or a CUDA graph is being captured. Eager sampling skips the
  guide's calls outside the interval; compiled and graphed sampling stay free of syncs.
- ``interval_check="host"``: read on the host whether any row lies inside the interval (one device sync per
  call when sigma lives on a GPU, negligible next to the network call it saves; free for CPU tensors) and
  skip the guide call when none does.
- ``interval_check="mask"``: always evaluate both networks and blend row-wise with ``torch.where``. No
  host synchronisation, static control flow, but it pays for the guide call even where guidance is off.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from ._network import append_dims as _append_dims
from ._network import as_sigma as _as_sigma
from ._types import Denoiser
from ._validate import check_float

__all__ = ["Guided", "guided"]


def _is_compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    fn = getattr(compiler, "is_compiling", None)
    return bool(fn()) if callable(fn) else False


class Guided:
    """A guided denoiser; build it with :func:`guided`.

    Attributes:
        main, guide: the two denoisers.
        w: the guidance weight.
        sigma_interval: ``(lo, hi)`` or None (guidance at every sigma).
        guide_cond: keyword arguments that override ``cond`` for the guide call.
        interval_check: "auto", "host" or "mask" (see the module docstring).
        sigma_min, sigma_max, round_sigma: forwarded from ``main`` when it has them, so
            :func:`~edm_samplers.clamp_sigmas` (``denoiser=``) works on the guided denoiser.
    """

    def __init__(
        self,
        main: Denoiser,
        guide: Denoiser,
        w: float,
        sigma_interval: tuple[float, float] | None,
        guide_cond: Mapping[str, Any],
        interval_check: Literal["auto", "host", "mask"],
    ) -> None:
        self.main = main
        self.guide = guide
        self.w = w
        self.sigma_interval = sigma_interval
        self.guide_cond = dict(guide_cond)
        self.interval_check = interval_check
        self.sigma_min = float(getattr(main, "sigma_min", 0.0))
        self.sigma_max = float(getattr(main, "sigma_max", float("inf")))
        rs = getattr(main, "round_sigma", None)
        if callable(rs):
            self.round_sigma = rs

    def __repr__(self) -> str:
        return (
            f"Guided(w={self.w}, sigma_interval={self.sigma_interval}, interval_check={self.interval_check!r}, "
            f"guide_cond={sorted(self.guide_cond)})"
        )

    def _inside(self, sigma: Tensor) -> Tensor | None:
        if self.sigma_interval is None:
            return None
        lo, hi = self.sigma_interval
        return (sigma >= lo) & (sigma <= hi)

    def _host_check(self, inside: Tensor) -> bool:
        if self.interval_check == "host":
            return True
        if self.interval_check == "mask" or _is_compiling():
            return False
        return not (inside.is_cuda and torch.cuda.is_current_stream_capturing())

    def __call__(self, x: Tensor, sigma: Tensor, **cond: Any) -> Tensor:
        """D(x; sigma) = D_guide + w (D_main - D_guide) where guidance is on, D_main elsewhere."""
        d_main = self.main(x, sigma, **cond)
        if self.w == 1.0:
            return d_main
        s = _as_sigma(sigma)
        inside = self._inside(s)
        if inside is not None and self._host_check(inside) and not bool(inside.any()):
            return d_main  # one host read of a [batch] bool; skips the guide call
        d_guide = self.guide(x, sigma, **{**cond, **self.guide_cond})
        d = torch.lerp(d_guide, d_main, self.w)  # d_guide + w (d_main - d_guide)
        if inside is None:
            return d
        if inside.ndim == 0:
            inside = inside.expand(x.shape[0])
        return torch.where(_append_dims(inside.to(device=d.device), d.ndim), d, d_main)


def guided(
    main: Denoiser,
    guide: Denoiser,
    w: float,
    *,
    sigma_interval: tuple[float, float] | None = None,
    guide_cond: Mapping[str, Any] | None = None,
    interval_check: Literal["auto", "host", "mask"] = "auto",
) -> Guided:
    """Combine two denoisers: D(x; sigma) = D_guide(x; sigma) + w (D_main(x; sigma) - D_guide(x; sigma)).

    Args:
        main: the denoiser to guide (the conditional / the full model).
        guide: the guiding denoiser (the unconditional model for CFG; a weaker model for autoguidance).
        w: guidance weight (a Python number); 1 is no guidance and costs one call, > 1 extrapolates away
            from the guide.
        sigma_interval: ``(lo, hi)``: guide only rows with lo <= sigma <= hi; D = D_main elsewhere.
        guide_cond: overrides of ``cond`` for the guide call (e.g. ``{"class_labels": None}`` for CFG).
        interval_check: "auto" (default: skip the guide call when no row is in the interval, except while
            compiling or capturing a CUDA graph), "host" (always skip that way; one sync per call) or
            "mask" (no sync; always two calls when w != 1). See the module docstring.

    Returns:
        A :class:`Guided` denoiser, usable with every sampler.

    Raises:
        TypeError / ValueError: for non-callable denoisers, a non-finite w, a bad interval or check mode.
    """
    if not callable(main):
        raise TypeError(f"main must be a denoiser main(x, sigma, **cond), got {type(main).__name__}")
    if not callable(guide):
        raise TypeError(f"guide must be a denoiser guide(x, sigma, **cond), got {type(guide).__name__}")
    w_f = check_float(w, "w")
    interval: tuple[float, float] | None = None
    if sigma_interval is not None:
        if not isinstance(sigma_interval, (tuple, list)) or len(sigma_interval) != 2:
            raise TypeError(f"sigma_interval must be a pair (lo, hi) or None, got {sigma_interval!r}")
        lo = check_float(sigma_interval[0], "sigma_interval[0]", nonnegative=True)
        hi = check_float(sigma_interval[1], "sigma_interval[1]", nonnegative=True, allow_inf=True)
        if not lo <= hi:
            raise ValueError(f"sigma_interval must satisfy lo <= hi, got ({lo}, {hi})")
        interval = (lo, hi)
    if interval_check not in ("auto", "host", "mask"):
        raise ValueError(f"interval_check must be 'auto', 'host' or 'mask', got {interval_check!r}")
    gc = {} if guide_cond is None else guide_cond
    if not isinstance(gc, Mapping) or not all(isinstance(k, str) for k in gc):
        raise TypeError("guide_cond must be a mapping of keyword-argument names to values, or None")
    return Guided(main, guide, w_f, interval, gc, interval_check)
