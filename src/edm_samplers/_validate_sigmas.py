"""Checks on noise-level schedules: a user's ``sigmas``, a builder's output, their fit to a dtype, a start at inf.

Part of the shared input checks (:mod:`._validate`, which re-exports every name here). Each check runs once at a
public entry point and may read the schedule on the host there; none runs inside a step.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["check_infinite_sigma", "check_sigmas", "check_sigmas_fit", "check_strict_schedule"]


def check_sigmas(
    sigmas: object, *, name: str = "sigmas", final_zero: bool = False, allow_inf_first: bool = False
) -> Tensor:
    """Validate a noise-level schedule and return it as a float64 CPU tensor.

    Requirements: a 1-D floating tensor (or sequence of numbers) with at least two entries, finite,
    non-negative, non-increasing, and zero nowhere except possibly at the end (a zero in the middle
    would divide by zero in the next step). With ``final_zero`` the last entry must be 0.

    With ``allow_inf_first`` (the samplers), ``sigmas[0]`` may be ``inf``: the start from pure noise, where the
    state is unit-variance noise (docs/api.md, "Starting at sigma = inf"). ``inf`` anywhere else, or a schedule
    that is all ``inf`` but its last entry when that is also ``inf``, is rejected.
    """
    if isinstance(sigmas, Tensor):
        if not (sigmas.is_floating_point()):
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {sigmas.dtype}")
        s = sigmas.detach().to(device="cpu", dtype=torch.float64)
    elif isinstance(sigmas, (list, tuple)):
        if any(isinstance(v, bool) for v in sigmas):  # [True, False] would read as [1.0, 0.0]
            raise TypeError(f"{name} must be a sequence of numbers, got booleans in {list(sigmas)!r}")
        try:
            s = torch.tensor([float(v) for v in sigmas], dtype=torch.float64)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name} must be a 1-D tensor or a sequence of numbers: {e}") from None
    else:
        raise TypeError(f"{name} must be a 1-D tensor or a sequence of numbers, got {type(sigmas).__name__}")
    if s.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(s.shape)}")
    if s.numel() < 2:
        raise ValueError(
            f"{name} needs at least 2 entries (a start and an end noise level), got {s.numel()}; "
            "build one with e.g. karras_sigmas(num_steps)"
        )
    inf = torch.isposinf(s)
    if bool(inf[1:].any()):
        i = int(torch.nonzero(inf[1:])[0]) + 1
        raise ValueError(
            f"{name} may be inf only at index 0 (the start from pure noise), but {name}[{i}] = inf; got {s.tolist()}"
        )
    if bool(inf[0]) and not allow_inf_first:
        raise ValueError(
            f"{name}[0] = inf (a start from pure noise) is not supported here, only by the samplers; "
            f"pass a finite schedule, e.g. with {name}[0] replaced by the model's sigma_max"
        )
    if not bool(torch.isfinite(s[1:]).all()) or bool(torch.isnan(s[0])) or bool(torch.isneginf(s[0])):
        raise ValueError(f"{name} must be finite (sigmas[0] may be inf for the samplers), got {s.tolist()}")
    if bool((s < 0).any()):
        raise ValueError(f"{name} must be >= 0, got {s.tolist()}")
    if bool((s[1:] > s[:-1]).any()):
        i = int(torch.nonzero(s[1:] > s[:-1])[0])
        raise ValueError(
            f"{name} must be non-increasing (sampling goes from high to low noise), but "
            f"{name}[{i + 1}] = {s[i + 1].item()} > {name}[{i}] = {s[i].item()}; "
            "reverse it with sigmas.flip(0) if it is ascending"
        )
    if bool((s[:-1] == 0).any()):
        raise ValueError(f"{name} may be 0 only at the end (a step from sigma = 0 is undefined), got {s.tolist()}")
    if final_zero and s[-1] != 0:
        raise ValueError(
            f"{name} must end in 0 here, got last entry {s[-1].item()}; append it with append_zero({name})"
        )
    return s


def check_infinite_sigma(denoiser: object, name: str = "denoiser") -> None:
    """A schedule starting at sigma = inf calls the denoiser at sigma = inf with unit noise as x: refuse a denoiser
    that says it cannot (attribute ``supports_infinite_sigma`` False, e.g. eps-prediction adapters and the EDM
    preconditioners); a plain callable without the attribute is trusted with the convention (docs/api.md)."""
    if getattr(denoiser, "supports_infinite_sigma", True) is False:
        why = getattr(denoiser, "infinite_sigma_reason", "")
        raise ValueError(
            f"sigmas[0] = inf (a start from pure noise) calls the {name} at sigma = inf, which "
            f"{type(denoiser).__name__} does not support{f' ({why})' if why else ''}; start at a finite level "
            "instead (e.g. the largest level the model was trained at) with x = initial_x(latents, sigmas)"
        )


def check_sigmas_fit(s: Tensor, dtype: torch.dtype, name: str = "sigmas") -> None:
    """The noise levels of a validated float64 schedule ``s`` must be usable in the sampling ``dtype``.

    Coefficients and preconditioners square sigma (sigma^2 + sigma_data^2, sigma_hat^2 - sigma^2, 1 + sigma^2),
    in float64 for the step tables and in at least float32 in the denoiser; the denoiser also receives sigma in
    the state ``dtype``. So every positive level must have a finite, nonzero square in
    ``promote_types(dtype, float32)`` (about 1e-19 .. 1.8e19 in float32, 1.5e-154 .. 1.3e154 in float64) and
    stay finite and positive when cast to ``dtype``; outside, a step silently loses its noise or divides by 0.
    Host floats only, no device sync.
    """
    wide = torch.finfo(torch.promote_types(dtype, torch.float32))
    lo, hi = math.sqrt(wide.smallest_normal), math.sqrt(wide.max)
    cast = s.to(dtype)
    pos = (s > 0) & torch.isfinite(s)  # a first level of inf (pure noise) is never squared: no range to fit
    bad = pos & ((s < lo) | (s > hi) | torch.isinf(cast) | (cast == 0))
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        fi = torch.finfo(dtype)
        lo, hi = max(lo, fi.smallest_normal * fi.eps), min(hi, fi.max)  # down to dtype's smallest subnormal
        raise ValueError(
            f"{name}[{i}] = {s[i].item():.6g} is out of the range the samplers support in {dtype}: positive noise "
            f"levels must lie in [{lo:.3g}, {hi:.3g}] (their squares must be finite and nonzero); "
            + ("pass dtype=torch.float64 or " if dtype != torch.float64 else "")
            + "rescale the schedule"
        )


def check_strict_schedule(
    s: Tensor, what: str, *, final_zero: bool | None = True, fix: str = "", allow_inf_first: bool = False
) -> Tensor:
    """Check a schedule produced by the library (a builder's output, after any cast).

    Requirements: 1-D floating, at least one positive level, every entry finite, the positive levels strictly
    decreasing, and a single 0 at the end (``final_zero=True``), none (``False``) or either (``None``).
    ``what`` names the call in the message (e.g. ``"karras_sigmas(num_steps=5, ...)"``); ``fix`` says what to
    change. With ``allow_inf_first`` the first level may be inf (a start from pure noise). Runs on the host once
    per call.
    """
    if not isinstance(s, Tensor) or s.ndim != 1 or not s.is_floating_point():
        raise TypeError(f"{what} must be a 1-D floating tensor, got {s!r}")
    v = s.detach().to(device="cpu", dtype=torch.float64)
    tail = f"; {fix}" if fix else ""
    ends_in_zero = v.numel() > 0 and bool(v[-1] == 0)
    if final_zero is True and not ends_in_zero:
        raise ValueError(f"{what} must end in 0, got {v.tolist()}{tail}")
    if final_zero is False and ends_in_zero:
        raise ValueError(f"{what} must not end in 0, got {v.tolist()}{tail}")
    pos = v[:-1] if ends_in_zero else v
    if pos.numel() < 1:
        raise ValueError(f"{what} has no positive noise level, got {v.tolist()}{tail}")
    head_ok = allow_inf_first and bool(torch.isposinf(pos[0]))
    if not bool(torch.isfinite(pos[1:] if head_ok else pos).all()):
        raise ValueError(f"{what} gives non-finite levels (overflow): {_short(v)}{tail}")
    if not bool((pos > 0).all()):
        i = int(torch.nonzero(~(pos > 0))[0])
        raise ValueError(
            f"{what} gives level {i} = {pos[i].item()!r}, a zero or negative level before the end (underflow): "
            f"{_short(v)}{tail}"
        )
    if pos.numel() > 1 and not bool((pos[1:] < pos[:-1]).all()):
        i = int(torch.nonzero(~(pos[1:] < pos[:-1]))[0])
        raise ValueError(
            f"{what} is not strictly decreasing: level {i + 1} = {pos[i + 1].item()!r} is not below level {i} = "
            f"{pos[i].item()!r} (the levels collapse at this precision){tail}"
        )
    return s


def _short(v: Tensor) -> str:
    vals = v.tolist()
    return str(vals) if len(vals) <= 12 else f"{vals[:6]} ... {vals[-6:]} ({len(vals)} entries)"
