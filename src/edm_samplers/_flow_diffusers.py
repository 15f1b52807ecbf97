"""Reading diffusers' flow-matching schedulers: which class a scheduler or config is, and its own noise levels.

Recognises FlowMatchEuler/Heun and DPM-Solver/UniPC with flow sigmas (a config without ``_class_name`` by its
keys), rejects options that change what the levels or the model's time mean, and maps a scheduler's
``set_timesteps`` levels to EDM sigmas. :func:`flow_scheduler_sigmas` is re-exported from
:mod:`edm_samplers.flow`, which also builds the denoiser from a scheduler (``flow_from_scheduler``) with
:func:`scheduler_and_config` and :data:`FLOW_OPTION`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ._flow_schedules import t_to_sigmas
from ._validate import check_float, check_int

__all__ = ["FLOW_OPTION", "flow_scheduler_name", "flow_scheduler_sigmas", "scheduler_and_config"]

_FLOW_NATIVE = ("FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler")
_FLOW_UNSUPPORTED = {
    "FlowMatchLCMScheduler": "a consistency-distilled flow model",
    "FlowMapEulerDiscreteScheduler": "a flow-map model, conditioned on two times",
    "LTXEulerAncestralRFScheduler": "an ancestral sampler with its own noise injection",
}
FLOW_OPTION = ("DPMSolverMultistepScheduler", "UniPCMultistepScheduler")


# Keys only FlowMatchEulerDiscreteScheduler's config has (FlowMatchHeun's has num_train_timesteps and shift only),
# and the DDPM noise-schedule keys no FlowMatch config has: how a config without '_class_name' is recognised.
_FLOWMATCH_EULER_KEYS = frozenset(
    {
        "use_dynamic_shifting", "base_shift", "max_shift", "base_image_seq_len", "max_image_seq_len",
        "invert_sigmas", "shift_terminal", "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas",
        "time_shift_type", "stochastic_sampling",
    }
)  # fmt: skip
_BETA_KEYS = frozenset({"beta_schedule", "beta_start", "beta_end", "trained_betas"})


def _flow_class(scheduler_or_config: object) -> tuple[str, bool] | None:
    """(diffusers class name, whether that class is only a guess) for a flow scheduler or config, else None.

    A config without ``_class_name`` (a scheduler's ``.config``) is a FlowMatch config if it has ``shift`` and no
    DDPM beta keys (Euler if it has an Euler-only key, else Euler or Heun: a guess), and a DPM-Solver or UniPC one
    (a guess: both call the model alike) if it has both flow options.
    """
    if isinstance(scheduler_or_config, Mapping):
        cfg: Mapping[str, Any] = scheduler_or_config
        name = cfg.get("_class_name")
        if name is None:
            keys = set(cfg)
            if "shift" in keys and not keys & _BETA_KEYS:
                return "FlowMatchEulerDiscreteScheduler", not keys & _FLOWMATCH_EULER_KEYS
            if cfg.get("use_flow_sigmas") and cfg.get("prediction_type") == "flow_prediction":
                return "DPMSolverMultistepScheduler", True
            return None
        if not isinstance(name, str):
            return None
    else:
        names = [c.__name__ for c in type(scheduler_or_config).__mro__]
        found = next((n for n in names if n in _FLOW_NATIVE or n in FLOW_OPTION), None)
        c = getattr(scheduler_or_config, "config", None)
        if found is None or not isinstance(c, Mapping):
            return None
        name, cfg = found, c
    if name in _FLOW_NATIVE:
        return name, False
    if name in FLOW_OPTION and (cfg.get("use_flow_sigmas") or cfg.get("prediction_type") == "flow_prediction"):
        return name, False
    return None


def flow_scheduler_name(scheduler_or_config: object) -> str | None:
    """The diffusers class name if ``scheduler_or_config`` schedules a flow model that this module handles
    (FlowMatchEuler/Heun, or DPM-Solver/UniPC with ``use_flow_sigmas`` or ``prediction_type="flow_prediction"``;
    a config without ``_class_name`` is recognised by its keys), else None. Private to the package (used by
    :func:`~edm_samplers.from_diffusers`)."""
    found = _flow_class(scheduler_or_config)
    return None if found is None else found[0]


def scheduler_and_config(
    scheduler_or_config: object, what: str, *, need_class: bool
) -> tuple[Any, Mapping[str, Any], str]:
    found = _flow_class(scheduler_or_config)
    got = type(scheduler_or_config).__name__
    if found is None and got in _FLOW_UNSUPPORTED:
        raise TypeError(
            f"{what} is a {got}, a flow scheduler whose model this adapter does not read ({_FLOW_UNSUPPORTED[got]}); "
            "supported: FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler, DPM-Solver/UniPC with "
            "flow sigmas. (A config without '_class_name' whose keys several classes take, such as "
            "FlowMatchHeunDiscreteScheduler's, can be read as it: pass the scheduler or add '_class_name'.)"
        )
    if found is None:
        raise TypeError(
            f"{what} must be a diffusers flow-matching scheduler (FlowMatchEulerDiscreteScheduler, "
            "FlowMatchHeunDiscreteScheduler, or DPMSolverMultistepScheduler / UniPCMultistepScheduler with "
            f"use_flow_sigmas=True) or its config, got {type(scheduler_or_config).__name__}"
        )
    name, guessed = found
    if guessed and need_class:
        raise ValueError(
            f"{what} is a flow scheduler config without '_class_name', and its keys fit more than one class "
            f"({name} or another); pass the scheduler itself or add '_class_name'"
        )
    if isinstance(scheduler_or_config, Mapping):
        try:
            import diffusers
        except ImportError:
            raise ImportError("a scheduler config needs the diffusers package: pip install diffusers") from None
        cls = getattr(diffusers, name, None)
        if cls is None:
            raise ValueError(f"diffusers {diffusers.__version__} has no {name}; upgrade diffusers")
        cfg = {k: v for k, v in scheduler_or_config.items() if k != "_use_default_values"}
        sched = cls.from_config(cfg)
    else:
        sched = scheduler_or_config
    config: Mapping[str, Any] = sched.config
    _check_flow_options(config, name)
    return sched, config, name


def _check_flow_options(cfg: Mapping[str, Any], name: str) -> None:
    """Options that change what the noise levels or the model's time mean: rejected, never ignored."""
    if name in FLOW_OPTION:
        if not cfg.get("use_flow_sigmas") or cfg.get("prediction_type") != "flow_prediction":
            raise ValueError(
                f"{name} mixes a flow-matching option with a diffusion one (use_flow_sigmas="
                f"{cfg.get('use_flow_sigmas')!r}, prediction_type={cfg.get('prediction_type')!r}); a flow model "
                "needs use_flow_sigmas=True and prediction_type='flow_prediction'"
            )
        for flag in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas"):
            if cfg.get(flag):
                raise ValueError(
                    f"{name} with use_flow_sigmas=True and {flag}=True builds its levels from the DDPM betas, not "
                    "flow times (diffusers 0.42); not supported. Use flow_sigmas(..., spacing=...) instead"
                )
        if cfg.get("final_sigmas_type", "zero") != "zero":
            raise ValueError(
                f"{name} has final_sigmas_type={cfg.get('final_sigmas_type')!r}; with flow sigmas only 'zero' is "
                "supported (diffusers' 'sigma_min' mixes in a DDPM noise level)"
            )
        if cfg.get("thresholding"):
            raise ValueError(f"{name} has thresholding=True, which changes the denoiser output; not supported")
    if cfg.get("invert_sigmas"):
        raise ValueError(f"{name} has invert_sigmas=True (Mochi: the model's time runs the other way); not supported")


def flow_scheduler_sigmas(scheduler_or_config: object, num_steps: int, *, mu: float | None = None) -> Tensor:
    """A flow scheduler's own noise levels for ``num_steps`` steps, in EDM units (float64, CPU, final 0).

    Calls ``set_timesteps(num_steps, mu=mu)`` on a copy of the scheduler (the one passed is not changed) and
    maps its flow times t to sigma = t / (1 - t); t = 1 gives sigma = inf. FlowMatchHeunDiscreteScheduler's
    repeated levels are given once. With :func:`flow_initial_x` and Euler (or the matching multistep sampler)
    this reproduces diffusers' sampling loop for the same latents.

    Args:
        scheduler_or_config: FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler, or
            DPMSolverMultistepScheduler / UniPCMultistepScheduler with ``use_flow_sigmas=True`` (an instance, or
            a config with ``_class_name``).
        num_steps: N >= 1.
        mu: the dynamic-shift exponent; required when the scheduler has ``use_dynamic_shifting=True``
            (see :func:`flow_shift_mu`), rejected otherwise.

    Raises:
        TypeError: for another scheduler class. ValueError: for unsupported options, a missing or unexpected mu.
    """
    sched, cfg, name = scheduler_and_config(scheduler_or_config, "scheduler_or_config", need_class=True)
    n = check_int(num_steps, "num_steps", minimum=1)
    dynamic = bool(cfg.get("use_dynamic_shifting", False))
    if dynamic and mu is None:
        raise ValueError(
            f"{name} has use_dynamic_shifting=True: its levels depend on the resolution; call "
            "edm_samplers.flow_scheduler_sigmas(scheduler, num_steps, mu=...) with mu = flow_shift_mu(image_seq_len, "
            "base_seq_len=config.base_image_seq_len, ...)"
        )
    if mu is not None and not dynamic:
        raise ValueError(f"mu is given but {name} has use_dynamic_shifting=False (it would be ignored)")
    work = copy.deepcopy(sched)
    kw: dict[str, Any] = {} if mu is None else {"mu": check_float(mu, "mu")}
    work.set_timesteps(n, **kw)
    t = torch.as_tensor(work.sigmas).detach().to(device="cpu", dtype=torch.float64)
    if name == "FlowMatchHeunDiscreteScheduler":
        t = torch.cat([t[:1], t[1:-1:2], t[-1:]])  # levels 1 .. N-1 appear twice (Heun's two stages)
    if t.numel() != n + 1 or float(t[-1]) != 0:
        raise ValueError(f"{name} gave {t.numel()} levels ending in {float(t[-1])}, expected {n} then 0")
    return t_to_sigmas(t[:-1], f"{name}.set_timesteps({n})")
