"""Fitting a schedule to a denoiser: :func:`clamp_sigmas` clamps the positive levels into the valid range (given,
or read from the denoiser), rounds them onto the levels a discrete-time model was trained at, and drops the
repeats, once on the host before sampling. The samplers never clamp on their own.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from ._validate import check_float, check_sigmas, check_strict_schedule

__all__ = ["clamp_sigmas", "warn_above_range"]


def _range_attr(denoiser: object, name: str, default: float) -> float:
    v = getattr(denoiser, name, default)
    if isinstance(v, Tensor) and v.numel() == 1:
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"denoiser.{name} must be a real number, got {type(v).__name__} {v!r}")
    if math.isnan(v):
        raise ValueError(f"denoiser.{name} must not be NaN")
    return float(v)


def _rounded(rs: object, pos: Tensor) -> Tensor:
    """``denoiser.round_sigma(pos)``, checked: one finite positive level per input level, in the same order."""
    if not callable(rs):
        raise TypeError("denoiser.round_sigma must be callable")
    r = rs(pos)
    if isinstance(r, (list, tuple)):
        r = torch.tensor(r, dtype=torch.float64) if all(isinstance(v, (int, float)) for v in r) else r
    if not isinstance(r, Tensor) or r.numel() != pos.numel() or not r.is_floating_point():
        got = f"dtype {r.dtype}, shape {tuple(r.shape)}" if isinstance(r, Tensor) else type(r).__name__
        raise TypeError(f"denoiser.round_sigma must map a [N] float tensor to a [N] float tensor, got {got}")
    rounded = r.detach().to(device="cpu", dtype=torch.float64).reshape(pos.shape)
    if not bool(torch.isfinite(rounded).all()) or not bool((rounded > 0).all()):
        raise ValueError(
            f"denoiser.round_sigma returned non-positive or non-finite levels {rounded.tolist()} "
            f"for {pos.tolist()}; it must map each level to a nearby positive one"
        )
    if bool((rounded[1:] > rounded[:-1]).any()):
        raise ValueError(
            f"denoiser.round_sigma reversed the order of the levels: {pos.tolist()} -> {rounded.tolist()}; "
            "it must be non-decreasing in sigma"
        )
    return rounded


def clamp_sigmas(
    sigmas: Tensor | Sequence[float],
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    *,
    denoiser: object = None,
    round: bool = True,
) -> Tensor:
    """Fit a schedule to a denoiser: clamp its positive levels into the valid range, round them, drop repeats.

    The range is [``sigma_min``, ``sigma_max``] where given, else the ``denoiser``'s ``sigma_min`` /
    ``sigma_max`` attributes (every preconditioner, adapter and guided denoiser of the library has them),
    else unbounded. With ``round``, the denoiser's ``round_sigma`` (if any: discrete-time models) maps each
    level onto one the network was trained at. The final 0 stays 0; consecutive duplicates created by
    clamping or rounding are removed, so every step moves (a zero-length step would waste network
    evaluations). Runs once on the host, before sampling.

    A first level of inf (a start from pure noise) stays inf when the range allows it (``sigma_max`` inf) and is
    never rounded; otherwise it becomes ``sigma_max``, a finite start: then scale the unit latents with
    ``initial_x(latents, fitted)`` (at inf the state is the unit noise itself).

    Examples: ``clamp_sigmas(karras_sigmas(18), denoiser=den)``, ``clamp_sigmas(s, 0.01, 20.0)``.

    Returns:
        The fitted schedule, in ``sigmas``' dtype and on its device (float64 on the CPU for a list): positive,
        strictly decreasing levels, then the final 0 if ``sigmas`` had one.

    Raises:
        ValueError / TypeError: for an invalid schedule; a range that is not two numbers with
            0 <= sigma_min < sigma_max (arguments first, else the denoiser's); a ``round_sigma`` that does not
            return one finite positive level per input level in the same order (e.g. ``lambda s: -s``); or
            levels that become equal after the cast back to ``sigmas``' dtype (e.g. float16 with sigma_min
            and sigma_max within an ulp).
    """
    s = check_sigmas(sigmas, allow_inf_first=True)
    given = check_float(sigma_min, "sigma_min", positive=True) if sigma_min is not None else None
    lo = _range_attr(denoiser, "sigma_min", 0.0) if given is None else given
    given = check_float(sigma_max, "sigma_max", positive=True, allow_inf=True) if sigma_max is not None else None
    hi = _range_attr(denoiser, "sigma_max", math.inf) if given is None else given
    if not 0 <= lo < hi:
        raise ValueError(
            f"sigma_min must be < sigma_max, got sigma_min={lo}, sigma_max={hi} (arguments first, else the "
            "denoiser's); the range needs 0 <= sigma_min < sigma_max"
        )
    pos = s[s > 0].clamp(lo, hi)  # a first level of inf stays inf only if sigma_max is inf
    rs = getattr(denoiser, "round_sigma", None)
    if round and rs is not None:
        head = 1 if bool(torch.isinf(pos[0])) else 0  # inf is never rounded (a model's levels are finite)
        pos = torch.cat([pos[:head], _rounded(rs, pos[head:])]) if pos.numel() > head else pos
    keep = torch.ones_like(pos, dtype=torch.bool)
    keep[1:] = pos[1:] != pos[:-1]
    out = pos[keep]
    ends_in_zero = bool(s[-1] == 0)
    if ends_in_zero:
        out = torch.cat([out, out.new_zeros(1)])
    if isinstance(sigmas, Tensor):
        out = out.to(dtype=sigmas.dtype)
        check_strict_schedule(
            out,
            f"clamp_sigmas(sigmas, sigma_min={lo}, sigma_max={hi}) in {sigmas.dtype}",
            final_zero=ends_in_zero,
            fix="clamp a float32/float64 schedule",
            allow_inf_first=True,
        )
        return out.to(device=sigmas.device)
    return out


def warn_above_range(denoiser: object, host_sigmas: Sequence[float], *, stacklevel: int = 2) -> None:
    """Warn (a ``UserWarning``) when a schedule starts above the denoiser's ``sigma_max``.

    Run once at a sampler's entry on the host copy of the schedule (no device sync). A model evaluated above
    the noise it was trained on (``karras_sigmas(18)``, sigma_max 80, on a model trained up to 14.6) gives
    poor samples without any error; ``clamp_sigmas(sigmas, denoiser=den)`` or, for a diffusers model,
    ``scheduler_sigmas(scheduler, n)`` gives a schedule inside the range. Levels below ``sigma_min`` are left
    alone (the last steps of the library's schedules often go below a discrete model's first level, where
    D is nearly x). Denoisers without a numeric ``sigma_max`` are not checked.
    """
    hi = getattr(denoiser, "sigma_max", None)
    if isinstance(hi, bool) or not isinstance(hi, (int, float)) or not host_sigmas:
        return
    top = float(host_sigmas[0])
    # 1e-6 relative slack: a scheduler's own float32 levels may round just above a float64 sigma_max.
    if top > float(hi) * (1 + 1e-6):
        warnings.warn(
            f"the schedule starts at sigma = {top:g}, above the denoiser's sigma_max = {float(hi):g} (the highest "
            "noise level its model was trained on); fit it with clamp_sigmas(sigmas, denoiser=den), or for a "
            "diffusers model use scheduler_sigmas(scheduler, num_steps)",
            UserWarning,
            stacklevel=stacklevel + 1,
        )
