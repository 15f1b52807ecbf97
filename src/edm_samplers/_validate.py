"""Input checks shared by the public entry points.

Every check runs once, at the entry of a public function and before any loop or capture; it may
synchronise with the device once (for example to look at a schedule), the steps never do. Messages
name the argument, show what was received and say how to fix it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


def check_int(value: object, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_float(
    value: object,
    name: str,
    *,
    positive: bool = False,
    nonnegative: bool = False,
    allow_inf: bool = False,
) -> float:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise TypeError(f"{name} must be a number, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if math.isnan(v) or (math.isinf(v) and not allow_inf):
        raise ValueError(f"{name} must be finite, got {v}")
    if positive and not v > 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    if nonnegative and not v >= 0:
        raise ValueError(f"{name} must be >= 0, got {v}")
    return v


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


def check_x(x: object, name: str = "x") -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"{name} must have a batch dimension of size >= 1, got shape {tuple(x.shape)}")
    return x


def state_dtype(x: Tensor, dtype: torch.dtype | None) -> torch.dtype:
    """The dtype sampling integrates in: x's dtype promoted to at least float32, unless overridden."""
    if dtype is None:
        return torch.promote_types(x.dtype, torch.float32)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype such as torch.float64, got {dtype!r}")
    return dtype


def check_denoiser(denoiser: object) -> None:
    if not callable(denoiser):
        raise TypeError(f"denoiser must be callable as denoiser(x, sigma, **cond), got {type(denoiser).__name__}")


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


def check_callback(callback: object) -> None:
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable as callback(info), got {type(callback).__name__}")


def check_cond(cond: object) -> dict[str, Any]:
    if cond is None:
        return {}
    if not isinstance(cond, dict):
        raise TypeError(
            "cond must be a dict of keyword arguments for the denoiser, e.g. cond={'class_labels': y}, "
            f"got {type(cond).__name__}"
        )
    for k in cond:
        if not isinstance(k, str):
            raise TypeError(f"cond keys must be argument names (str), got {k!r}")
    return dict(cond)


def check_denoised(denoised: object, x: Tensor, name: str = "denoiser", *, shape_fix: str = "") -> Tensor:
    """Check one denoiser output; static shape checks only, no device sync. ``shape_fix`` adds a hint to the
    shape error (e.g. how a learned-variance network is wrapped)."""
    if not isinstance(denoised, Tensor):
        raise TypeError(f"{name} must return a torch.Tensor, got {type(denoised).__name__}")
    if denoised.shape != x.shape:
        raise ValueError(
            f"{name} returned shape {tuple(denoised.shape)} for an input of shape {tuple(x.shape)}; "
            f"{shape_fix or 'D(x; sigma) must have the shape of x'}"
        )
    if not denoised.is_floating_point():
        raise TypeError(f"{name} must return a floating-point tensor, got dtype {denoised.dtype}")
    return denoised


# ---- sampler entry checks (issue 11: no bad input gives a silent wrong answer) ----------------------


def check_has_data(value: object, name: str) -> None:
    """Reject meta tensors and the meta device: they carry shapes but no values, so nothing can be sampled."""
    dev = value.device if isinstance(value, Tensor) else value if isinstance(value, torch.device) else None
    if dev is not None and dev.type == "meta":
        what = "a meta tensor (a shape without data)" if isinstance(value, Tensor) else "the meta device"
        raise ValueError(f"{name} is {what}; sampling needs real values: use a real device such as 'cpu' or 'cuda'")


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


def check_cond_batch(cond: dict[str, Any], batch: int, name: str = "cond") -> None:
    """Tensor values of ``cond`` are per-sample: their first dimension must be x's batch (or 1, broadcast).

    0-d tensors and non-tensor values are passed through unchecked; meta tensors are rejected.
    """
    for k, v in cond.items():
        if not isinstance(v, Tensor):
            continue
        check_has_data(v, f"{name}[{k!r}]")
        if v.ndim >= 1 and v.shape[0] not in (batch, 1):
            raise ValueError(
                f"{name}[{k!r}] has shape {tuple(v.shape)} but x has batch size {batch}; the first dimension of a "
                f"cond tensor is the batch: pass one row per sample (or a single row to share it, shape "
                f"(1, ...)), e.g. {name}[{k!r}][:{batch}] or .expand({batch}, ...)"
            )


def check_denoised_on(denoised: object, x: Tensor, name: str = "denoiser", *, shape_fix: str = "") -> Tensor:
    """:func:`check_denoised` plus the device: D(x; sigma) must live where x lives (metadata only, no sync)."""
    out = check_denoised(denoised, x, name, shape_fix=shape_fix)
    if out.device != x.device:
        raise ValueError(
            f"{name} returned a tensor on {out.device} for an input on {x.device}; D(x; sigma) must live on x's "
            f"device (move the network there, or return out.to(x.device))"
        )
    return out


def check_round_sigma(sigma_hat: Tensor, rounded: object) -> Tensor:
    """Validate what ``round_sigma`` made of the ``[N]`` float64 noise levels ``sigma_hat``.

    Returns the rounded levels as a float64 CPU tensor. They must be a ``[N]`` tensor of positive, finite
    levels: a zero or negative level would make the samplers divide by zero or step the wrong way.
    """
    if not isinstance(rounded, Tensor) or rounded.shape != sigma_hat.shape:
        got = f"a tensor of shape {tuple(rounded.shape)}" if isinstance(rounded, Tensor) else type(rounded).__name__
        raise TypeError(
            f"round_sigma must map a [N] tensor of sigmas to a [N] tensor of supported sigmas, got {got} for "
            f"N = {sigma_hat.numel()}"
        )
    check_has_data(rounded, "round_sigma's result")
    if rounded.is_complex() or rounded.dtype == torch.bool:
        raise TypeError(f"round_sigma must return real noise levels, got dtype {rounded.dtype}")
    hat = rounded.detach().to(device="cpu", dtype=torch.float64)
    if not bool(torch.isfinite(hat).all()) or bool((hat <= 0).any()):
        i = int(torch.nonzero(~torch.isfinite(hat) | (hat <= 0))[0])
        raise ValueError(
            f"round_sigma returned non-positive or non-finite noise levels: it mapped sigma = {sigma_hat[i].item()} "
            f"to {hat[i].item()}; it must map every sigma > 0 to a supported sigma > 0 (e.g. a preconditioner's "
            "round_sigma)"
        )
    return hat


def check_shape(shape: object, name: str = "shape") -> tuple[int, ...]:
    """A shape: a sequence (not a string) of ints >= 1; bools, floats and other non-integers are rejected."""
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
        raise TypeError(f"{name} must be a tuple of ints such as (3, 32, 32), got {type(shape).__name__} {shape!r}")
    out = []
    for i, v in enumerate(shape):
        if isinstance(v, bool) or not hasattr(v, "__index__"):
            raise TypeError(f"{name}[{i}] must be an int, got {type(v).__name__} {v!r} (in {name} = {shape!r})")
        n = v.__index__()
        if n < 1:
            raise ValueError(f"{name}[{i}] must be >= 1, got {n} (in {name} = {shape!r})")
        out.append(n)
    return tuple(out)


def check_flag(value: object, name: str) -> bool:
    """A True/False option: other values (1, "no", None) are rejected rather than read by truthiness."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return value


# ---------------------------------------------------------------------------------------------
# Checks added for issue 11 (no bad input gives a silent wrong answer).


def check_int_range(value: object, name: str, *, minimum: int, maximum: int) -> int:
    """An integer in ``[minimum, maximum]``: a Python int or anything with ``__index__`` (numpy integers, 0-d
    integer tensors); never a bool or a float (which would be truncated silently)."""
    if isinstance(value, (bool, float)) or type(value).__name__ == "bool_":
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if isinstance(value, Tensor) and (value.is_floating_point() or value.dtype == torch.bool or value.numel() != 1):
        raise TypeError(f"{name} must be an int, got a tensor of dtype {value.dtype} and shape {tuple(value.shape)}")
    import operator  # local: this block is appended to the module (the imports above are shared)

    try:
        v = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}") from None
    if not minimum <= v <= maximum:
        raise ValueError(f"{name} must be in [{minimum}, {maximum}], got {v}")
    return v


def check_float_dtype(dtype: object, name: str = "dtype") -> torch.dtype:
    """A floating ``torch.dtype``: an integer or bool dtype would truncate the values silently."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(
            f"{name} must be a floating torch.dtype such as torch.float32 or torch.float64, got {dtype!r} "
            "(an integer dtype would truncate the values)"
        )
    return dtype


def check_device(device: object, name: str = "device") -> torch.device | None:
    """None, a ``torch.device`` or a device string such as ``"cpu"`` / ``"cuda:0"``."""
    if device is None or isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(f"{name} must be a torch.device, a string such as 'cpu' or 'cuda', or None, got {device!r}")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"{name} must name a device such as 'cpu' or 'cuda:0', got {device!r} ({e})") from None


def values_on_host(t: Tensor) -> bool:
    """Whether ``t``'s values can be inspected for free: a CPU tensor in eager mode.

    On an accelerator that would be a device sync (forbidden inside sampler steps); under ``torch.compile``
    or ``torch.jit`` tracing it would be a graph break. Callers then fall back to :func:`nan_where_invalid`.
    """
    tracing = torch.jit.is_tracing()  # type: ignore[attr-defined,no-untyped-call]
    return t.device.type == "cpu" and not torch.compiler.is_compiling() and not tracing


def nan_where_invalid(t: Tensor, valid: Tensor) -> Tensor:
    """``t`` with NaN wherever ``valid`` is False: a sync-free way to make a bad value loud downstream."""
    return torch.where(valid, t, math.nan)


def first_bad(t: Tensor, bad: Tensor) -> str:
    """Describe the first offending entry of ``t`` (for error messages): ``"[i] = v"``, or ``" = v"`` for 0-d."""
    if t.ndim == 0:
        return f" = {t.item()!r}"
    idx = tuple(int(i) for i in torch.nonzero(bad)[0])
    where = ", ".join(str(i) for i in idx)
    return f"[{where}] = {t[idx].item()!r}"


def check_nonnegative_values(
    t: Tensor,
    name: str,
    *,
    fix: str,
    positive: bool = False,
    maximum: float = math.inf,
    too_large: str = "",
    allow_inf: bool = False,
) -> Tensor:
    """Reject NaN, infinite or negative (with ``positive``, also zero) entries of ``t``, and entries above a finite
    ``maximum`` (``too_large`` says why), when that is free (see :func:`values_on_host`); otherwise (accelerator,
    compile, tracing) return ``t`` with negative or NaN entries set to NaN, so the result is NaN (caught by the
    samplers' finite check) rather than finite and wrong. Never syncs.

    The host check reads small tensors through ``tolist`` (about 2 us for a batch of 16, a tenth of the
    tensor-op version): it runs on every denoiser call of a CPU sampling loop.

    ``allow_inf``: +inf passes (a denoiser defined at sigma = inf, the start from pure noise).
    """
    lo = 0.0
    if allow_inf:
        return _nonnegative_or_inf(t, name, fix=fix, positive=positive)
    if values_on_host(t):
        try:
            if t.numel() <= 4096:
                vals = t.detach().reshape(-1).tolist()
                ok = all(lo < v < math.inf for v in vals) if positive else all(lo <= v < math.inf for v in vals)
                big = maximum < math.inf and any(v > maximum for v in vals)
            else:
                ok = bool((torch.isfinite(t) & ((t > lo) if positive else (t >= lo))).all())
                big = maximum < math.inf and bool((t > maximum).any())
        except RuntimeError:  # a functorch transform (vmap) cannot read values: fall back to NaN
            return nan_where_invalid(t, (t > lo) if positive else (t >= lo))
        if not ok:
            valid = torch.isfinite(t) & ((t > lo) if positive else (t >= lo))
            bound = "> 0" if positive else ">= 0"
            raise ValueError(f"{name} must be finite and {bound}, got {name}{first_bad(t, ~valid)}; {fix}")
        if big:
            raise ValueError(
                f"{name} must be <= {maximum:.4g} here, got {name}{first_bad(t, t > maximum)}; {too_large}"
            )
        return t
    # NaN fails the comparison too; +inf is left to give inf/NaN by itself.
    return nan_where_invalid(t, (t > lo) if positive else (t >= lo))


def _nonnegative_or_inf(t: Tensor, name: str, *, fix: str, positive: bool) -> Tensor:
    """:func:`check_nonnegative_values` letting +inf through (no maximum): host check when free, else NaN."""
    valid = (t > 0) if positive else (t >= 0)  # +inf passes, NaN fails
    if values_on_host(t):
        try:
            ok = bool(valid.all())
        except RuntimeError:  # a functorch transform (vmap) cannot read values: fall back to NaN
            return nan_where_invalid(t, valid)
        if not ok:
            bound = "> 0" if positive else ">= 0"
            raise ValueError(f"{name} must be {bound} (inf allowed), got {name}{first_bad(t, ~valid)}; {fix}")
        return t
    return nan_where_invalid(t, valid)


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


def check_path(path: object, name: str = "path") -> None:
    """A file name: str or ``os.PathLike``. ``open()`` would take an int as a file descriptor (a silent
    read from or write to some other open file), and bytes paths are not supported here."""
    import os  # local: this block is appended to the module (the imports above are shared)

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike file name, got {type(path).__name__} {path!r}")
