"""diffusers models as denoisers: :func:`from_diffusers` reads a DDPM-family scheduler (or its saved config)
and wraps the model in a :class:`~edm_samplers.DDPMDenoiser`, or a flow-matching one in a
:class:`~edm_samplers.FlowDenoiser` (:mod:`.flow`). diffusers is imported lazily (the ``diffusers`` extra);
schedulers of other model families (VE, EDM, other flow schedulers, consistency models) are named and rejected
rather than misread as DDPM ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from .adapters import DDPMDenoiser, ModelCall, learned_variance_for
from .flow import FlowDenoiser, flow_from_scheduler, flow_scheduler_name

__all__ = ["from_diffusers"]


# diffusers schedulers whose model is a discrete-time VP (DDPM-family) model: noise levels from alphas_cumprod.
_DDPM_FAMILY = frozenset(
    {
        "DDPMScheduler", "DDPMParallelScheduler", "DDIMScheduler", "DDIMParallelScheduler", "DDIMInverseScheduler",
        "PNDMScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler",
        "LMSDiscreteScheduler", "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler",
        "DPMSolverMultistepScheduler", "DPMSolverMultistepInverseScheduler", "DPMSolverSinglestepScheduler",
        "DPMSolverSDEScheduler", "DEISMultistepScheduler", "UniPCMultistepScheduler", "SASolverScheduler",
        "RePaintScheduler", "UnCLIPScheduler", "CogVideoXDDIMScheduler", "CogVideoXDPMScheduler",
    }
)  # fmt: skip
# Known schedulers of other model families, and why they are not read as DDPM models.
_VE = ("ScoreSdeVeScheduler", "KarrasVeScheduler")
_EDM = ("EDMEulerScheduler", "EDMDPMSolverMultistepScheduler")
_FLOW = (
    "FlowMatchEulerDiscreteScheduler",
    "FlowMatchHeunDiscreteScheduler",
    "FlowMatchLCMScheduler",
    "FlowMapEulerDiscreteScheduler",
    "LTXEulerAncestralRFScheduler",
)
_CONSISTENCY = ("LCMScheduler", "TCDScheduler", "CMStochasticIterativeScheduler", "SCMScheduler")
_OTHER_FAMILIES = {
    **dict.fromkeys(_VE, "a variance-exploding (VE) model"),
    **dict.fromkeys(_EDM, "an EDM-preconditioned model"),
    **dict.fromkeys(_FLOW, "a flow-matching (rectified-flow) model"),
    **dict.fromkeys(_CONSISTENCY, "a consistency-distilled model (a consistency map, not a denoiser of the ODE)"),
}
_SUPPORTED_HINT = (
    "from_diffusers supports DDPM-family (discrete-time VP) schedulers such as DDPMScheduler, DDIMScheduler, "
    "EulerDiscreteScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler; for another model family "
    "wrap the network yourself (ContinuousDenoiser, DDPMDenoiser or a Precond)"
)


def _check_scheduler_class(name: str, exc: type[Exception], what: str) -> None:
    if name in _DDPM_FAMILY:
        return
    family = _OTHER_FAMILIES.get(name)
    reason = f"{name} schedules {family}, not supported (yet)" if family else f"{name} is not a known scheduler"
    raise exc(f"{what}: {reason}. {_SUPPORTED_HINT}")


def _check_ddpm_options(cfg: Mapping[str, Any], name: str) -> None:
    """Options that turn a DDPM-family scheduler into one for another model family."""
    if cfg.get("use_flow_sigmas") or cfg.get("prediction_type") == "flow_prediction":
        raise ValueError(
            f"{name} is configured for a flow-matching model (use_flow_sigmas={cfg.get('use_flow_sigmas')!r}, "
            f"prediction_type={cfg.get('prediction_type')!r}) but not both; a flow-matching model needs "
            "use_flow_sigmas=True and prediction_type='flow_prediction' together"
        )
    if cfg.get("timestep_type", "discrete") != "discrete":
        raise ValueError(
            f"{name} has timestep_type={cfg.get('timestep_type')!r}: the model takes a function of sigma as its "
            "time input, not a trained step; from_diffusers supports timestep_type='discrete' only"
        )


def _missing_schedule_keys(cfg: Mapping[str, Any]) -> list[str]:
    """The keys a config without ``_class_name`` must give to define the noise schedule (no silent defaults)."""
    missing = [k for k in ("num_train_timesteps",) if k not in cfg]
    if cfg.get("trained_betas") is None:
        if "beta_schedule" not in cfg:
            missing.append("beta_schedule (or trained_betas)")
        if cfg.get("beta_schedule") != "squaredcos_cap_v2":
            missing += [k for k in ("beta_start", "beta_end") if k not in cfg]
    return missing


def _scheduler_parts(scheduler_or_config: object, prediction: str | None) -> tuple[Tensor, Mapping[str, Any]]:
    try:
        import diffusers
    except ImportError:
        raise ImportError(
            "from_diffusers needs the diffusers package: "
            "pip install 'edm-samplers[diffusers]' (or pip install diffusers)"
        ) from None
    if isinstance(scheduler_or_config, Mapping):
        cfg = dict(scheduler_or_config)
        # A scheduler's .config lists the keys it took as its own defaults; from_config of another class would
        # replace their (stated) values by that class's defaults. The values are here: use them.
        cfg.pop("_use_default_values", None)
        name = cfg.get("_class_name")
        if name is not None:
            if not isinstance(name, str):
                raise TypeError(f"scheduler_or_config['_class_name'] must be a str, got {name!r}")
            _check_scheduler_class(name, ValueError, f"scheduler_or_config['_class_name'] = {name!r}")
            _check_ddpm_options(cfg, name)
            cls = getattr(diffusers, name, None)
            if cls is None:
                raise ValueError(f"diffusers {diffusers.__version__} has no {name}; upgrade diffusers")
            # The named class reads its config exactly as diffusers does (its own defaults for missing keys).
            sched = cls.from_config(cfg)
        else:
            missing = _missing_schedule_keys(cfg)
            if prediction is None and "prediction_type" not in cfg:
                missing.append("prediction_type (or the prediction= argument)")
            if missing:
                raise ValueError(
                    f"scheduler_or_config has no '_class_name' and lacks {', '.join(missing)}; a config without a "
                    "class name is read as a DDPM config and must state its noise schedule and prediction type "
                    "(no defaults are guessed). Pass the scheduler's saved config (scheduler_config.json), the "
                    "scheduler itself, or add the keys"
                )
            _check_ddpm_options(cfg, "scheduler_or_config")
            if "timestep_scaling" in cfg or "original_inference_steps" in cfg:
                raise ValueError(
                    "scheduler_or_config has the keys of a consistency-model scheduler (LCMScheduler / TCDScheduler: "
                    "timestep_scaling, original_inference_steps), whose model is not a denoiser of the ODE; "
                    "from_diffusers does not support it"
                )
            sched = diffusers.DDPMScheduler.from_config(cfg)  # type: ignore[no-untyped-call]
        # The built scheduler's config: the class's defaults (prediction_type, variance_type) where cfg has none.
        return torch.as_tensor(sched.alphas_cumprod), sched.config
    names = [c.__name__ for c in type(scheduler_or_config).__mro__]
    known = next((n for n in names if n in _DDPM_FAMILY or n in _OTHER_FAMILIES), None)
    config = getattr(scheduler_or_config, "config", None)
    if known is None or not isinstance(config, Mapping):
        raise TypeError(
            "scheduler_or_config must be a diffusers DDPM-family scheduler (e.g. DDPMScheduler, "
            f"EulerDiscreteScheduler) or its config dict, got {names[0]}"
        )
    _check_scheduler_class(known, TypeError, f"scheduler_or_config is an instance of {names[0]}")
    _check_ddpm_options(config, names[0])
    abar: object = scheduler_or_config.alphas_cumprod  # type: ignore[attr-defined]
    return torch.as_tensor(abar), config


def from_diffusers(
    model: Callable[..., Any],
    scheduler_or_config: object,
    *,
    prediction: str | None = None,
    timestep: Literal["interpolate", "quantize"] = "interpolate",
    learned_variance: bool | None = None,
    net_dtype: torch.dtype | None = None,
    call: ModelCall | None = None,
    time_scale: float | None = None,
) -> DDPMDenoiser | FlowDenoiser:
    """A diffusers model (``UNet2DModel`` or anything called as ``model(x_t, t, **cond)``) as a denoiser.

    Reads ``alphas_cumprod`` from the scheduler, the prediction type from ``config.prediction_type`` and
    learned variance from ``config.variance_type`` ("learned"/"learned_range"). The model's ``.sample``
    output is unwrapped.

    Only DDPM-family (discrete-time VP) schedulers are supported: ``DDPMScheduler``, ``DDIMScheduler``,
    ``PNDMScheduler``, ``EulerDiscreteScheduler``, ``EulerAncestralDiscreteScheduler``,
    ``HeunDiscreteScheduler``, ``LMSDiscreteScheduler``, ``KDPM2(Ancestral)DiscreteScheduler``,
    ``DPMSolverMultistepScheduler``, ``DPMSolverSinglestepScheduler``, ``DPMSolverSDEScheduler``,
    ``DEISMultistepScheduler``, ``UniPCMultistepScheduler``, ``SASolverScheduler`` and their inverse, parallel,
    RePaint, UnCLIP and CogVideoX variants, and the flow-matching ones below. VE (``ScoreSdeVeScheduler``), EDM
    (``EDMEulerScheduler``), other flow schedulers (``FlowMatchLCMScheduler``), consistency (``LCMScheduler``,
    ``TCDScheduler``) and unknown schedulers are rejected.

    A config mapping is dispatched on its ``_class_name`` (as in a saved ``scheduler_config.json``): that
    diffusers class builds ``alphas_cumprod`` with its own defaults for missing keys, exactly as diffusers
    would. A config without ``_class_name`` is read as a ``DDPMScheduler`` config and must state the noise
    schedule itself, with no defaults guessed: ``num_train_timesteps`` and ``trained_betas`` or
    ``beta_schedule`` (plus ``beta_start`` and ``beta_end`` unless it is "squaredcos_cap_v2"), and
    ``prediction_type`` unless ``prediction=`` is passed.
    Sample with ``x = latents * sigmas[0]`` (diffusers' ``init_noise_sigma`` for "linspace"/"trailing"
    spacing) on a schedule inside ``[den.sigma_min, den.sigma_max]``.

    Args:
        model: the diffusers model; held itself (``den.model is model``).
        scheduler_or_config: a scheduler instance or its ``config`` mapping.
        prediction: override the config's ``prediction_type``.
        timestep: "interpolate" (diffusers' Euler/Heun/DPM convention) or "quantize".
        learned_variance: whether the model returns mean and variance channels; None: from the model's config
            (``out_channels == 2 * in_channels``: DiT, PixArt-alpha), else the scheduler's ``variance_type``,
            else decided on the output's shape (:func:`~edm_samplers.adapters.learned_variance_for`).
        net_dtype: the precision the model runs in (e.g. ``torch.bfloat16`` autocasts a float32 model); D
            stays at least float32. See :class:`~edm_samplers.DDPMDenoiser`.
        call: a hook ``call(model, x_t, t, cond) -> output`` for a model the default call (``timestep`` by
            name where the signature needs it) does not fit.
        time_scale: flow-matching models only: the model's time input per unit flow time t (see
            :class:`~edm_samplers.FlowDenoiser`); read from the model class when None (SD3, Flux, Sana, AuraFlow).

    Flow matching: ``FlowMatchEulerDiscreteScheduler``, ``FlowMatchHeunDiscreteScheduler`` and
    ``DPMSolverMultistepScheduler`` / ``UniPCMultistepScheduler`` with ``use_flow_sigmas=True`` and
    ``prediction_type="flow_prediction"`` (instances, saved configs with ``_class_name``, or a scheduler's
    ``.config``) give a :class:`~edm_samplers.FlowDenoiser` (:mod:`edm_samplers.flow`); sample it on
    :func:`~edm_samplers.flow_scheduler_sigmas` from :func:`~edm_samplers.flow_initial_x`.

    Raises:
        ImportError: if diffusers is not installed.
        TypeError: for a scheduler instance of an unsupported class.
        ValueError: for a config of an unsupported class or option, a class-less config missing schedule
            keys, or an unsupported prediction type.
    """
    if flow_scheduler_name(scheduler_or_config) is not None:
        if prediction is not None and prediction not in ("flow", "flow_prediction"):
            raise ValueError(f"a flow-matching scheduler's model predicts the velocity; got prediction={prediction!r}")
        if timestep != "interpolate":
            raise ValueError(
                f"timestep={timestep!r} applies to DDPM-family schedulers; a flow model's time input is set by "
                "time_scale (and the scheduler class)"
            )
        return flow_from_scheduler(
            model,
            scheduler_or_config,
            time_scale=time_scale,
            learned_variance=learned_variance,
            net_dtype=net_dtype,
            call=call,
        )
    if time_scale is not None:
        raise ValueError(f"time_scale applies to flow-matching schedulers only, got time_scale={time_scale!r}")
    abar, cfg = _scheduler_parts(scheduler_or_config, prediction)
    if cfg.get("rescale_betas_zero_snr") or (abar.numel() > 0 and float(abar[-1]) == 0):
        raise ValueError(
            "the scheduler has zero terminal SNR (rescale_betas_zero_snr=True, last alphas_cumprod 0 or clipped): "
            "its last noise level is infinite, which EDM sampling cannot start from; from_diffusers does not "
            "support it (DDPMDenoiser(model, alphas_cumprod[:-1]) drops the last step)"
        )
    pred = prediction if prediction is not None else str(cfg.get("prediction_type", "epsilon"))
    lv = learned_variance_for(model, cfg.get("variance_type")) if learned_variance is None else learned_variance
    return DDPMDenoiser(
        model, abar, prediction=pred, timestep=timestep, learned_variance=lv, net_dtype=net_dtype, call=call
    )
