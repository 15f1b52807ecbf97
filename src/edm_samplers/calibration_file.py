"""The result of :func:`~edm_samplers.calibrate` and its plain-JSON file (:func:`save_calibration`,
:func:`load_calibration`; the file is also a schedule file that :func:`~edm_samplers.load_schedule` reads)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from ._safetensors import write_atomic
from ._validate import check_path, check_sigmas
from .afs import afs_enabled
from .solvers.registry import get

__all__ = ["Calibration", "load_calibration", "save_calibration"]


@dataclass(frozen=True)
class Calibration:
    """Result of :func:`calibrate`: what to pass to the sampler, the objective and the cost.

    Use: ``sampler_fn(den, x, cal.sigmas, **cal.knobs, **cal.run_options())`` (or ``generate(..., sampler=
    cal.sampler, **cal.knobs, **cal.run_options())``).

    Attributes:
        sampler: registry name; knobs: its knobs (as fitted).
        sigmas: the schedule (float64, levels then 0).
        direction_scale: one scale per denoiser evaluation (None if not fitted).
        sigma_scale: one sigma multiplier per denoiser evaluation (None if not fitted).
        afs: the ``afs=`` value used (None, True, a float sigma_data, or ``"external"`` for a closed-form
            object, which must be passed again to :meth:`run_options`).
        nfe: network evaluations of one run.
        error, initial_error: calibration objective (mean squared error per element vs the reference) after /
            before (the initial schedule with unit scales).
        evaluations, seconds, cpu_seconds: the calibration cost (sampling runs; wall-clock and this process's
            CPU seconds, including the reference solution when it is computed here).
        batch, min_batch: calibration batch size and the minimum of the batch-size rule
            (:func:`~edm_samplers.min_calibration_batch`); gap: its predicted relative held-out excess at ``batch``.
        history: the objective after each accepted move.
        network_calls, reused_calls: denoiser calls made (the reference's excluded), and calls re-used instead:
            a run that changes only parameters acting from call j on (a Jacobian column of call j's scale or
            sigma multiplier, a candidate level) repeats the base run's calls before j bitwise, so their
            recorded results are returned (the results are identical; only network time is saved).
        loss: the objective the joint stage minimised (``error`` without ``features``; with them the mix of
            relative squared error and relative feature-moment error described in :func:`calibrate`).
    """

    sampler: str
    knobs: dict[str, Any]
    sigmas: Tensor
    direction_scale: list[float] | None
    sigma_scale: list[float] | None
    afs: Any
    nfe: int
    error: float
    initial_error: float
    evaluations: int
    seconds: float
    cpu_seconds: float
    batch: int
    min_batch: int
    gap: float = math.nan
    history: list[float] = field(default_factory=list)
    loss: float = math.nan
    network_calls: int = 0
    reused_calls: int = 0

    def run_options(self, afs: object = None) -> dict[str, Any]:
        """The run options to sample with: ``direction_scale`` and ``afs`` (pass ``afs`` for ``"external"``)."""
        opts: dict[str, Any] = {}
        if self.direction_scale is not None:
            opts["direction_scale"] = list(self.direction_scale)
        if self.sigma_scale is not None:
            opts["sigma_scale"] = list(self.sigma_scale)
        if self.afs == "external":
            if not afs_enabled(afs):
                raise ValueError("this calibration used a closed-form afs object: pass it again, run_options(afs=...)")
            opts["afs"] = afs
        elif afs_enabled(self.afs):
            opts["afs"] = self.afs
        return opts


def afs_json(afs: object) -> Any:
    """How a calibration file records ``afs=``: None, True, a float, or ``"external"`` for a closed-form object."""
    if afs is None or afs is False:
        return None
    if afs is True or (isinstance(afs, (int, float)) and not isinstance(afs, bool)):
        return afs
    return "external"


def save_calibration(path: str | os.PathLike[str], cal: Calibration, **meta: Any) -> None:
    """Write ``cal`` as plain JSON (``{"sigmas": [...], "direction_scale": [...], "sampler": ..., ...}``).

    The file is also a schedule file (:func:`~edm_samplers.load_schedule` reads its ``"sigmas"``). Written
    atomically; ``meta`` (JSON values) is stored beside, e.g. the command that made it.
    """
    check_path(path)
    if not isinstance(cal, Calibration):
        raise TypeError(f"cal must be a Calibration (from calibrate), got {type(cal).__name__}")
    data = {
        "sigmas": check_sigmas(cal.sigmas).tolist(), "direction_scale": cal.direction_scale,
        "sigma_scale": cal.sigma_scale, "sampler": cal.sampler,
        "knobs": cal.knobs, "afs": cal.afs, "nfe": cal.nfe, "error": cal.error, "initial_error": cal.initial_error,
        "evaluations": cal.evaluations, "seconds": cal.seconds,
        "cpu_seconds": cal.cpu_seconds, "batch": cal.batch, "min_batch": cal.min_batch,
        "gap": cal.gap, "meta": meta,
    }  # fmt: skip
    try:
        text = json.dumps(data, indent=1, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise type(e)(f"save_calibration: the metadata must be plain JSON: {e}; nothing written") from None
    write_atomic(path, text.encode("utf-8"))


def load_calibration(path: str | os.PathLike[str]) -> Calibration:
    """Read a file written by :func:`save_calibration` (validated: schedule, scales' count, sampler and knobs)."""
    check_path(path)
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{os.fspath(path)!r} is not a JSON calibration file: {e}") from None
    keys = ("sigmas", "direction_scale", "sampler", "knobs", "afs")
    if not isinstance(d, dict) or any(k not in d for k in keys):
        raise ValueError(f"{os.fspath(path)!r} is not a calibration file: it needs the keys {list(keys)}")
    spec = get(d["sampler"])
    values = spec.resolve(d["knobs"])
    sig = check_sigmas(d["sigmas"], name=f"sigmas in {os.fspath(path)!r}")
    calls = spec.nfe(sig.numel() - 1, bool(sig[-1] == 0), values)
    lists = {}
    for key in ("direction_scale", "sigma_scale"):
        v = d.get(key)
        if v is not None and (not isinstance(v, list) or len(v) != calls or not all(
            isinstance(e, (int, float)) and not isinstance(e, bool) for e in v
        )):  # fmt: skip
            raise ValueError(f"{key} in {os.fspath(path)!r} must be {calls} numbers, got {v!r}"[:300])
        lists[key] = None if v is None else [float(e) for e in v]
    afs = d["afs"]
    return Calibration(
        spec.name, dict(d["knobs"]), sig, lists["direction_scale"], lists["sigma_scale"], afs,
        spec.count(sig, values, afs=None if afs is None else True), float(d.get("error", math.nan)),
        float(d.get("initial_error", math.nan)), int(d.get("evaluations", 0)), float(d.get("seconds", 0.0)),
        float(d.get("cpu_seconds", 0.0)), int(d.get("batch", 0)), int(d.get("min_batch", 0)),
        float(d.get("gap", math.nan)),
    )  # fmt: skip
