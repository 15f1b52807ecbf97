"""Guidance: two denoisers combined into one, D = D_guide + w (D_main - D_guide).

- Classifier-free guidance (Ho & Salimans 2022): ``guide`` is the same network without its condition:
  ``guided(net, net, w, guide_cond=null_condition(net, cond))`` (:func:`null_condition` knows each model
  type's "unconditional": DiT's null class, the empty-prompt embedding of text models, ...).
- Autoguidance (Karras et al. 2024): ``guide`` is a smaller or less-trained version of the main model,
  called with the same condition.

w = 1 returns D_main (no guidance) and w = 0 returns D_guide. An optional ``sigma_interval`` = (lo, hi)
restricts guidance to lo <= sigma <= hi (Kynkaanniemi et al. 2024); outside it D = D_main.

**Batched CFG.** When ``main is guide`` (classifier-free guidance), the two evaluations are one network call
of batch 2B, as diffusers' pipelines do: x, sigma and every condition concatenated along dim 0 (the main
rows first). That is the default (``batched=None``) whenever the conditions can be concatenated: the same
keys (nested mappings and sequences alike), tensors with the batch as their first dimension and equal
trailing shapes, dtypes and devices; values both calls share (the same object: None, flags, a tensor without
a batch dimension such as Flux's ``img_ids``) pass through once. Otherwise it falls back to two calls. The
choice reads shapes, dtypes and object identity only (no device sync) and is made on every call.
``batched=False`` always makes two calls; ``batched=True`` raises when the conditions cannot be batched.
Batched and two-call guidance agree to float32 round-off (the network's kernels may block a batch of 2B
differently from two of B).

**CFG++** (Chung et al. 2024): :meth:`Guided.both` returns the guided estimate together with the guide's,
which the CFG++ samplers (``euler_cfgpp_sample``, ``dpmpp_2m_cfgpp_sample``) use to renoise.

Cost and graph-friendliness. w is a Python float fixed at construction, so ``w == 1`` is decided once:
the guided denoiser then *is* one call of ``main`` (:meth:`Guided.both` still evaluates the guide: CFG++
needs it at every w). The interval is data-dependent (sigma is a device tensor); three ways to honour it,
all giving the same values:

- ``interval_check="auto"`` (default): the "host" check whenever a host read is allowed, the "mask"
  blend while ``torch.compile`` traces or a CUDA graph is being captured. Eager sampling skips the
  guide's calls outside the interval; compiled and graphed sampling stay free of syncs.
- ``interval_check="host"``: read on the host whether any row lies inside the interval (one device sync per
  call when sigma lives on a GPU, negligible next to the network call it saves; free for CPU tensors) and
  skip the guide call when none does.
- ``interval_check="mask"``: always evaluate both networks and blend row-wise with ``torch.where``. No
  host synchronisation, static control flow, but it pays for the guide call even where guidance is off.

:func:`null_condition` lives in :mod:`._null_condition` and is re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

import torch
from torch import Tensor

from ._network import append_dims as _append_dims
from ._network import as_sigma as _as_sigma
from ._null_condition import null_condition as null_condition
from ._types import Denoiser
from ._validate import check_float

__all__ = ["Guided", "guided", "null_condition"]


def _inf_ok(denoiser: object) -> bool:
    return getattr(denoiser, "supports_infinite_sigma", True) is not False


def _is_compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    fn = getattr(compiler, "is_compiling", None)
    return bool(fn()) if callable(fn) else False


class _Unbatchable(Exception):
    """Raised inside :func:`_concat` with the reason the two calls' arguments cannot share one call."""


def _concat(a: object, b: object, batch: int, where: str) -> object:
    """The argument of one call of batch 2B standing for ``a`` (main call) and ``b`` (guide call).

    Decided on static properties only (types, shapes, dtypes, devices, identity): never reads tensor values.
    """
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        if a.ndim >= 1 and b.ndim >= 1 and a.shape[0] == batch and b.shape[0] == batch:
            if a.shape[1:] != b.shape[1:] or a.dtype != b.dtype or a.device != b.device:
                raise _Unbatchable(
                    f"{where}: shapes {tuple(a.shape)} / {tuple(b.shape)}, dtypes {a.dtype} / {b.dtype}, devices "
                    f"{a.device} / {b.device} differ between the two calls"
                )
            return torch.cat([a, b])
        if a is b:  # shared, without a batch dimension (e.g. position ids): passed once
            return a
        raise _Unbatchable(f"{where}: tensors without a leading batch dimension of {batch} differ between the calls")
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        if set(a) != set(b):
            raise _Unbatchable(f"{where}: keys {sorted(map(str, a))} / {sorted(map(str, b))} differ")
        return {k: _concat(a[k], b[k], batch, f"{where}[{k!r}]") for k in a}
    if isinstance(a, (tuple, list)) and type(a) is type(b):
        seq_b = cast(Sequence[Any], b)  # type(a) is type(b)
        if len(a) != len(seq_b):
            raise _Unbatchable(f"{where}: lengths {len(a)} / {len(seq_b)} differ")
        items = [_concat(u, v, batch, f"{where}[{i}]") for i, (u, v) in enumerate(zip(a, seq_b, strict=True))]
        return tuple(items) if isinstance(a, tuple) else items
    if a is b or (type(a) is type(b) and isinstance(a, (bool, int, float, str)) and a == b):
        return a
    raise _Unbatchable(f"{where}: {type(a).__name__} / {type(b).__name__} values differ between the two calls")


class Guided:
    """A guided denoiser; build it with :func:`guided`.

    Attributes:
        main, guide: the two denoisers.
        w: the guidance weight.
        sigma_interval: ``(lo, hi)`` or None (guidance at every sigma).
        guide_cond: keyword arguments that override ``cond`` for the guide call.
        interval_check: "auto", "host" or "mask" (see the module docstring).
        batched: None (one call of batch 2B when ``main is guide`` and the conditions concatenate), True
            (always; an error otherwise) or False (two calls).
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
        batched: bool | None = None,
    ) -> None:
        self.main = main
        self.guide = guide
        self.w = w
        self.sigma_interval = sigma_interval
        self.guide_cond = dict(guide_cond)
        self.interval_check = interval_check
        self.batched = batched
        self.sigma_min = float(getattr(main, "sigma_min", 0.0))
        self.sigma_max = float(getattr(main, "sigma_max", float("inf")))
        rs = getattr(main, "round_sigma", None)
        if callable(rs):
            self.round_sigma = rs
        # A start at sigma = inf needs both denoisers defined there (read once by the samplers' entry check).
        why = [getattr(d, "infinite_sigma_reason", "") for d in (main, guide) if not _inf_ok(d)]
        self.supports_infinite_sigma = not why
        self.infinite_sigma_reason = "; ".join(w for w in why if w)

    def __repr__(self) -> str:
        return (
            f"Guided(w={self.w}, sigma_interval={self.sigma_interval}, interval_check={self.interval_check!r}, "
            f"batched={self.batched}, guide_cond={sorted(self.guide_cond)})"
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

    def _batched_args(
        self, x: Tensor, sigma: Tensor, cond: Mapping[str, Any], guide_cond: Mapping[str, Any]
    ) -> tuple[Tensor, Tensor, dict[str, Any]] | None:
        """x, sigma and the conditions of one call of batch 2B, or None for two calls (static decision)."""
        if self.batched is False or self.main is not self.guide:
            return None
        batch = x.shape[0] if x.ndim >= 1 else 0
        try:
            if batch == 0:
                raise _Unbatchable(f"x of shape {tuple(x.shape)} has no batch dimension")
            if sigma.ndim == 0:
                sigma = sigma.expand(batch)
            if sigma.shape != (batch,):
                raise _Unbatchable(f"sigma of shape {tuple(sigma.shape)} is not [batch] = [{batch}]")
            merged = _concat(dict(cond), dict(guide_cond), batch, "cond")
        except _Unbatchable as e:
            if self.batched:
                raise ValueError(
                    f"batched=True, but the main and guide calls cannot be one call of batch 2B: {e}. Make the "
                    "conditions concatenable (the same keys; tensors [batch, ...] of equal trailing shapes) or "
                    "pass batched=None (falls back to two calls)"
                ) from None
            return None
        return torch.cat([x, x]), torch.cat([sigma, sigma]), cast(dict[str, Any], merged)

    def _evaluate(
        self, x: Tensor, sigma: Tensor, cond: Mapping[str, Any]
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """(D_main, D_guide or None where no row needs it, the interval mask or None)."""
        s = _as_sigma(sigma)
        inside = self._inside(s)
        if inside is not None and self._host_check(inside) and not bool(inside.any()):
            return self.main(x, sigma, **cond), None, inside  # one host read of a [batch] bool; skips the guide
        guide_cond = {**cond, **self.guide_cond}
        args = self._batched_args(x, s, cond, guide_cond)
        if args is None:
            return self.main(x, sigma, **cond), self.guide(x, sigma, **guide_cond), inside
        out = self.main(args[0], args[1], **args[2])
        b = x.shape[0]
        if not isinstance(out, Tensor) or out.ndim < 1 or out.shape[0] != 2 * b:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"batched classifier-free guidance: the denoiser returned {got} for a batch of 2 x {b}; it must "
                "return one row per input row (or pass batched=False to guided(...) for two calls)"
            )
        return out[:b], out[b:], inside

    @staticmethod
    def _blend(d: Tensor, d_main: Tensor, inside: Tensor | None) -> Tensor:
        if inside is None:
            return d
        if inside.ndim == 0:
            inside = inside.expand(d.shape[0])
        return torch.where(_append_dims(inside.to(device=d.device), d.ndim), d, d_main)

    def __call__(self, x: Tensor, sigma: Tensor, **cond: Any) -> Tensor:
        """D(x; sigma) = D_guide + w (D_main - D_guide) where guidance is on, D_main elsewhere."""
        if self.w == 1.0:
            return self.main(x, sigma, **cond)
        d_main, d_guide, inside = self._evaluate(x, sigma, cond)
        if d_guide is None:
            return d_main
        return self._blend(torch.lerp(d_guide, d_main, self.w), d_main, inside)  # d_guide + w (d_main - d_guide)

    def both(self, x: Tensor, sigma: Tensor, **cond: Any) -> tuple[Tensor, Tensor]:
        """``(D, D_renoise)``: the guided estimate and the guide's (CFG++ renoises with the latter).

        Where guidance is off (outside ``sigma_interval``) both are D_main, so CFG++ is the plain sampler
        there. The guide is evaluated also at w = 1 (CFG++ with lambda = 1 still renoises with it).
        """
        d_main, d_guide, inside = self._evaluate(x, sigma, cond)
        if d_guide is None:
            return d_main, d_main
        d = torch.lerp(d_guide, d_main, self.w)
        return self._blend(d, d_main, inside), self._blend(d_guide, d_main, inside)


def guided(
    main: Denoiser,
    guide: Denoiser,
    w: float,
    *,
    sigma_interval: tuple[float, float] | None = None,
    guide_cond: Mapping[str, Any] | None = None,
    interval_check: Literal["auto", "host", "mask"] = "auto",
    batched: bool | None = None,
) -> Guided:
    """Combine two denoisers: D(x; sigma) = D_guide(x; sigma) + w (D_main(x; sigma) - D_guide(x; sigma)).

    Args:
        main: the denoiser to guide (the conditional / the full model).
        guide: the guiding denoiser (the unconditional model for CFG: pass ``main`` itself; a weaker model
            for autoguidance).
        w: guidance weight (a Python number); 1 is no guidance and costs one call, > 1 extrapolates away
            from the guide. For the CFG++ samplers it is CFG++'s lambda, typically in [0, 1].
        sigma_interval: ``(lo, hi)``: guide only rows with lo <= sigma <= hi; D = D_main elsewhere.
        guide_cond: overrides of ``cond`` for the guide call: the model's null condition for CFG, built by
            :func:`null_condition` (e.g. ``{"class_labels": <DiT's null class>}``).
        interval_check: "auto" (default: skip the guide call when no row is in the interval, except while
            compiling or capturing a CUDA graph), "host" (always skip that way; one sync per call) or
            "mask" (no sync; always both evaluations when w != 1). See the module docstring.
        batched: None (default): when ``main is guide``, one network call of batch 2B whenever the
            conditions concatenate, two calls otherwise; True: always one call (ValueError when the
            conditions cannot be concatenated); False: always two calls.

    Returns:
        A :class:`Guided` denoiser, usable with every sampler (and with the CFG++ samplers).

    Raises:
        TypeError / ValueError: for non-callable denoisers, a non-finite w, a bad interval, check mode or
            ``batched`` (True needs ``main is guide``).
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
    if batched is not None and not isinstance(batched, bool):
        raise TypeError(f"batched must be None (automatic), True or False, got {batched!r}")
    if batched and main is not guide:
        raise ValueError(
            "batched=True needs main and guide to be the same denoiser (classifier-free guidance: "
            "guided(net, net, w, guide_cond=...)); two different networks cannot share one call"
        )
    return Guided(main, guide, w_f, interval, gc, interval_check, batched)
