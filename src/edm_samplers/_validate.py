"""Input checks shared by the public entry points.

Every check runs once, at the entry of a public function and before any loop or capture; it may
synchronise with the device once (for example to look at a schedule), the steps never do. Messages
name the argument, show what was received and say how to fix it.

This module holds the argument checks (numbers, flags, shapes, dtypes, devices, x, cond, the denoiser and its
output) and re-exports the schedule checks (:mod:`._validate_sigmas`) and the sync-free value checks
(:mod:`._validate_values`), so every caller imports from here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ._validate_sigmas import check_infinite_sigma as check_infinite_sigma
from ._validate_sigmas import check_sigmas as check_sigmas
from ._validate_sigmas import check_sigmas_fit as check_sigmas_fit
from ._validate_sigmas import check_strict_schedule as check_strict_schedule
from ._validate_values import check_nonnegative_values as check_nonnegative_values
from ._validate_values import first_bad as first_bad
from ._validate_values import nan_where_invalid as nan_where_invalid
from ._validate_values import values_on_host as values_on_host


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


def check_path(path: object, name: str = "path") -> None:
    """A file name: str or ``os.PathLike``. ``open()`` would take an int as a file descriptor (a silent
    read from or write to some other open file), and bytes paths are not supported here."""
    import os  # local: this block is appended to the module (the imports above are shared)

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike file name, got {type(path).__name__} {path!r}")
