"""Sync-free checks on tensor values that may live on an accelerator (per-call checks in the denoisers).

Where the values can be read for free (a CPU tensor in eager mode) a bad entry raises; elsewhere (accelerator,
``torch.compile``, tracing, vmap) it becomes NaN, so the result is loud rather than finite and wrong. Part of the
shared input checks (:mod:`._validate`, which re-exports every name here).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["check_nonnegative_values", "first_bad", "nan_where_invalid", "values_on_host"]


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
