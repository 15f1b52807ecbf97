"""Step schedules tuned for the shipped digits model, one per solver and NFE budget.

Made by ``benchmarks/digits_low_nfe.py --tune`` with :func:`edm_samplers.schedule_opt.optimize_schedule`
(global error against a converged solution on 64 calibration seeds that the evaluation never uses) and
shipped as plain JSON (``digits_schedules.json``): ``{"meta": {...}, "schedules": {solver: {nfe: [sigmas]}}}``.
Solver names are those of the benchmarks: ``euler``, ``heun``, ``dpmpp_2m``, ``dpmpp_3m``, ``unipc3``,
``deis3``, ``ipndm4``, ``lms4``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._validate import check_float_dtype, check_int, check_sigmas, check_strict_schedule

__all__ = ["SCHEDULES_FILE", "digits_schedule", "digits_schedules"]

SCHEDULES_FILE = Path(__file__).resolve().parent / "digits_schedules.json"


@functools.cache
def _load() -> dict[str, Any]:
    if not SCHEDULES_FILE.is_file():
        return {"meta": {}, "schedules": {}}
    data: dict[str, Any] = json.loads(SCHEDULES_FILE.read_text())
    return data


def digits_schedules() -> dict[str, list[int]]:
    """The tuned schedules on offer: ``{solver: [nfe, ...]}``."""
    return {k: sorted(int(n) for n in v) for k, v in _load()["schedules"].items()}


def digits_schedule(solver: str, nfe: int, *, dtype: torch.dtype = torch.float64) -> Tensor:
    """The schedule tuned for ``solver`` at ``nfe`` network evaluations on the shipped digits model.

    Example::

        import edm_samplers as es
        den = es.models.digits()
        sig = es.models.digits_schedule("unipc3", 5)
        imgs = es.generate(den, range(64), (1, 8, 8), sig, sampler=es.unipc_sample, order=3)

    Args:
        solver: a solver name of :func:`digits_schedules` (str).
        nfe: the number of network evaluations (int; a float is not rounded, it is an error).
        dtype: a floating dtype for the result; it must hold the levels apart.

    Raises:
        TypeError: for a non-str ``solver``, a non-int ``nfe`` or a non-floating ``dtype``.
        ValueError: for ``nfe`` < 1, or a ``dtype`` that merges levels.
        KeyError: if no schedule was tuned for that solver and NFE (the message lists those on offer).
    """
    if not isinstance(solver, str):
        raise TypeError(f"solver must be a solver name (str), got {type(solver).__name__} {solver!r}")
    n = check_int(nfe, "nfe", minimum=1)
    dt = check_float_dtype(dtype)
    table = _load()["schedules"]
    try:
        values = table[solver][str(n)]
    except KeyError:
        raise KeyError(
            f"no tuned digits schedule for solver={solver!r} at nfe={n}; available: {digits_schedules()}"
        ) from None
    s = check_sigmas(values, name="tuned schedule", final_zero=True)
    return check_strict_schedule(
        s.to(dt), f"digits_schedule({solver!r}, {n}) in {dt}", fix="use dtype=torch.float32 or torch.float64"
    )
