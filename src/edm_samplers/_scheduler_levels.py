"""The noise levels of the drop-in scheduler (:mod:`.diffusers_scheduler`): its ``schedule=`` option read for a
``set_timesteps(num_inference_steps, sigmas=..., mu=...)`` call. Private.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from . import _diffusers_families as fam
from ._scheduler_families import Hooks, family_of
from .diffusers_adapter import scheduler_sigmas
from .schedule_opt import load_schedule
from .schedules import karras_sigmas, loglinear_sigmas

__all__ = ["SCHEDULES", "check_schedule_option", "levels_for", "replaced_levels"]

SCHEDULES = ("karras", "loglinear", "scheduler")
"""Named schedules (besides a schedule file or a list of levels): EDM's rho schedule on the model's range,
levels uniform in log sigma, or the replaced scheduler's own levels for the same arguments."""


# The flow classes a config without '_class_name' names unambiguously (FlowMatchHeun's keys are FlowMapEuler's too).
_FLOW_BY_KEYS = frozenset({"FlowMatchEulerDiscreteScheduler"})


def check_schedule_option(schedule_opt: object) -> str | list[float]:
    if isinstance(schedule_opt, (list, tuple)):
        return [float(v) for v in schedule_opt]
    if isinstance(schedule_opt, os.PathLike):
        schedule_opt = os.fspath(schedule_opt)
    if not isinstance(schedule_opt, str) or not (schedule_opt in SCHEDULES or schedule_opt.endswith(".json")):
        raise ValueError(
            f"schedule must be one of {', '.join(map(repr, SCHEDULES))}, the path of a schedule file written by "
            f"save_schedule (ending in .json) or a list of noise levels, got {schedule_opt!r}"
        )
    return schedule_opt


def replaced_levels(
    model_config: Mapping[str, Any], hooks: Hooks, n: int | None, sigmas: object, mu: float | None
) -> Tensor:
    """The replaced scheduler's own levels for these set_timesteps arguments (EDM units, float64)."""
    import diffusers

    cfg = dict(model_config)
    name = cfg.get("_class_name")
    if name is None:  # a scheduler built in code: the class whose __init__ takes exactly these keys, as from_diffusers
        name = fam.class_by_signature(diffusers, cfg)
        name = name if name is not None and name in fam.VP | fam.EDM | fam.VE | _FLOW_BY_KEYS else None
    if not isinstance(name, str) or not hasattr(diffusers, name):
        raise ValueError(
            f"schedule='scheduler', the pipeline's sigmas / mu and the range of a flow or zero-terminal-SNR model "
            f"are read by the replaced scheduler's class, but model_config names none ('_class_name' is "
            f"{cfg.get('_class_name')!r} and its keys fit no one class): build this scheduler from the scheduler "
            "itself, "
            "EDMSamplerScheduler.from_config(pipe.scheduler, ...)"
        )
    sched = getattr(diffusers, name).from_config(cfg)
    if sigmas is None and mu is None and cfg.get("use_dynamic_shifting"):
        raise ValueError(
            f"{name} has use_dynamic_shifting=True, so its levels depend on the resolution, but set_timesteps got "
            "no mu: pass set_timesteps(num_inference_steps, mu=...) as the Flux and SD3 pipelines do "
            "(mu = edm_samplers.flow_shift_mu(image_seq_len, ...)), or a schedule file or list of levels"
        )
    if sigmas is None and mu is None:
        if n is None:  # pragma: no cover (levels_for asks for n or sigmas)
            raise ValueError("set_timesteps needs num_inference_steps (or sigmas)")
        return scheduler_sigmas(sched, n)
    kwargs: dict[str, Any] = {"sigmas": sigmas} if sigmas is not None else {}
    if mu is not None:
        kwargs["mu"] = mu  # dynamic shifting (Flux, SD3 at high resolution): the scheduler applies it
    sched.set_timesteps(n, **kwargs)
    return family_of(hooks).own_levels(sched, name)


def levels_for(
    opt: str | list[float],
    hooks: Hooks,
    model_config: Mapping[str, Any],
    n: int | None,
    sigmas: object,
    mu: float | None,
    rho: float,
    given_range: tuple[float | None, float | None],
) -> Tensor:
    """The levels of ``schedule=opt`` (float64, EDM units, final 0) for a set_timesteps call.

    "karras" / "loglinear" span the model's range (``given_range`` overrides either end). Where the pipeline
    passes ``sigmas`` / ``mu``, or the model's range is open (0 for flow, inf for flow and zero terminal SNR),
    the range is that of the replaced scheduler's own levels; where those start from pure noise (sigma = inf),
    so does the schedule, spreading the other N - 1 steps over the finite range.
    """
    if isinstance(opt, list) or opt not in SCHEDULES:
        levels = torch.tensor(opt, dtype=torch.float64) if isinstance(opt, list) else load_schedule(opt)
        if float(levels[-1]) != 0:
            levels = torch.cat([levels, levels.new_zeros(1)])
        if n is not None and n != levels.numel() - 1:
            raise ValueError(
                f"the schedule {opt if isinstance(opt, str) else 'given'} has {levels.numel() - 1} steps, but "
                f"set_timesteps got num_inference_steps={n}; call the pipeline with "
                f"num_inference_steps={levels.numel() - 1}"
            )
        return levels
    if n is None and sigmas is None:
        raise ValueError("set_timesteps needs num_inference_steps (or sigmas)")
    lo, hi = hooks.sigma_min, hooks.sigma_max
    given = sigmas is not None or mu is not None
    start_inf = False
    if opt == "scheduler" or given or not (lo > 0 and math.isfinite(hi)):
        own = replaced_levels(model_config, hooks, n, sigmas, mu)
        if opt == "scheduler":
            return own
        pos = own[(own > 0) & torch.isfinite(own)]
        start_inf = bool(torch.isinf(own[0])) and given_range[1] is None
        if pos.numel() > 0:
            lo = float(pos[-1]) if given or not lo > 0 else lo
            hi = float(pos[0]) if given or not math.isfinite(hi) else hi
    lo = given_range[0] if given_range[0] is not None else lo
    hi = given_range[1] if given_range[1] is not None else hi
    steps = (n if n is not None else int(torch.as_tensor(sigmas).numel())) - int(start_inf)
    if steps == 0:
        return torch.tensor([math.inf, 0.0], dtype=torch.float64)
    made = karras_sigmas(steps, lo, hi, rho) if opt == "karras" else loglinear_sigmas(steps, lo, hi)
    return torch.cat([made.new_full((1,), math.inf), made]) if start_inf else made
