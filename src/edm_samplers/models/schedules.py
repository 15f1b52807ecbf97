"""Step schedules tuned for the shipped digits model, one per solver and NFE budget.

Made by ``benchmarks/digits_low_nfe.py --tune`` with :func:`edm_samplers.schedule_opt.optimize_schedule`
(global error against a converged solution on 64 calibration seeds that the evaluation never uses) and
shipped as plain JSON (``digits_schedules.json``): ``{"meta": {...}, "schedules": {key: {nfe: [sigmas]}}}``.

A key is the sampler's registry name with every knob the schedule was tuned with
(:func:`edm_samplers.solvers.registry.label` with ``full=True``), e.g.
``"unipc:order=3,order_rule=full"``: a schedule answers only for the exact configuration it was tuned
for, even after a default changes.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._validate import check_float_dtype, check_int, check_sigmas, check_strict_schedule
from ..solvers.registry import label, parse_label

__all__ = ["SCHEDULES_FILE", "digits_schedule", "digits_schedules"]

SCHEDULES_FILE = Path(__file__).resolve().parent / "digits_schedules.json"


@functools.cache
def _load() -> dict[str, Any]:
    if not SCHEDULES_FILE.is_file():
        return {"meta": {}, "schedules": {}}
    data: dict[str, Any] = json.loads(SCHEDULES_FILE.read_text())
    return data


def digits_schedules() -> dict[str, list[int]]:
    """The tuned schedules on offer: ``{key: [nfe, ...]}``, keys as ``"unipc:order=3,order_rule=full"``."""
    return {k: sorted(int(n) for n in v) for k, v in _load()["schedules"].items()}


def digits_schedule(sampler: str, nfe: int, *, dtype: torch.dtype = torch.float64, **knobs: Any) -> Tensor:
    """The schedule tuned for ``sampler`` with ``knobs`` at ``nfe`` network evaluations on the digits model.

    ``sampler`` is a registry name (or a key of :func:`digits_schedules`, knobs included); knobs not given
    take their registry defaults, and the schedule must have been tuned with exactly the resulting knobs.

    Example::

        import edm_samplers as es
        den = es.models.digits()
        knobs = {"order": 3, "order_rule": "full"}
        sig = es.models.digits_schedule("unipc", 5, **knobs)
        imgs = es.generate(den, range(64), (1, 8, 8), sig, sampler="unipc", **knobs)

    Args:
        sampler: a registry name, or a key of :func:`digits_schedules` (str).
        nfe: the number of network evaluations (int; a float is not rounded, it is an error).
        dtype: a floating dtype for the result; it must hold the levels apart.
        **knobs: the sampler's knobs (registry defaults for the others).

    Raises:
        TypeError: for a non-str ``sampler``, a non-int ``nfe``, a non-floating ``dtype`` or a bad knob.
        ValueError: for an unknown sampler, ``nfe`` < 1, or a ``dtype`` that merges levels.
        KeyError: if no schedule was tuned for that configuration and NFE (the message lists those on offer).
    """
    if not isinstance(sampler, str):
        raise TypeError(f"sampler must be a registry name (str), got {type(sampler).__name__} {sampler!r}")
    n = check_int(nfe, "nfe", minimum=1)
    dt = check_float_dtype(dtype)
    name, given = parse_label(sampler)
    key = label(name, {**given, **knobs}, full=True)
    try:
        values = _load()["schedules"][key][str(n)]
    except KeyError:
        raise KeyError(f"no tuned digits schedule for {key!r} at nfe={n}; available: {digits_schedules()}") from None
    s = check_sigmas(values, name="tuned schedule", final_zero=True)
    return check_strict_schedule(
        s.to(dt), f"digits_schedule({key!r}, {n}) in {dt}", fix="use dtype=torch.float32 or torch.float64"
    )
