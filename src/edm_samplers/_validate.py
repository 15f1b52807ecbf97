"""Input checks shared by the public entry points.

Every check runs once, at the entry of a public function and before any loop or capture; it may
synchronise with the device once (for example to look at a schedule), the steps never do. Messages
name the argument, show what was received and say how to fix it.
"""

from __future__ import annotations

import math
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


def check_sigmas(sigmas: object, *, name: str = "sigmas", final_zero: bool = False) -> Tensor:
    """Validate a noise-level schedule and return it as a float64 CPU tensor.

    Requirements: a 1-D floating tensor (or sequence of numbers) with at least two entries, finite,
    non-negative, non-increasing, and zero nowhere except possibly at the end (a zero in the middle
    would divide by zero in the next step). With ``final_zero`` the last entry must be 0.
    """
    if isinstance(sigmas, Tensor):
        if not (sigmas.is_floating_point()):
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {sigmas.dtype}")
        s = sigmas.detach().to(device="cpu", dtype=torch.float64)
    elif isinstance(sigmas, (list, tuple)):
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
    if not bool(torch.isfinite(s).all()):
        raise ValueError(f"{name} must be finite, got {s.tolist()}")
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


def check_denoised(denoised: object, x: Tensor, name: str = "denoiser") -> Tensor:
    """Check one denoiser output; static shape checks only, no device sync."""
    if not isinstance(denoised, Tensor):
        raise TypeError(f"{name} must return a torch.Tensor, got {type(denoised).__name__}")
    if denoised.shape != x.shape:
        raise ValueError(
            f"{name} returned shape {tuple(denoised.shape)} for an input of shape {tuple(x.shape)}; "
            "D(x; sigma) must have the shape of x"
        )
    if not denoised.is_floating_point():
        raise TypeError(f"{name} must return a floating-point tensor, got dtype {denoised.dtype}")
    return denoised
