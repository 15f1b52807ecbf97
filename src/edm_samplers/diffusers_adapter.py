"""diffusers models as denoisers, and diffusers' schedules in EDM units.

- :func:`from_diffusers` wraps a model for its scheduler's model family: VP (DDPM-family, LCM, TCD) models
  become a :class:`~edm_samplers.DDPMDenoiser`, EDM-trained ones (``EDMEulerScheduler``,
  ``EDMDPMSolverMultistepScheduler``) an :class:`~edm_samplers.EDMPrecond`, VE score models
  (``ScoreSdeVeScheduler``) a :class:`~edm_samplers.ContinuousDenoiser`; flow-matching schedulers go to
  :mod:`edm_samplers.flow` when present.
- :func:`scheduler_sigmas` and :func:`start_state` give a scheduler's own noise levels for N steps and its
  starting state from unit latents, so a sampler of this library reproduces the diffusers loop.

diffusers is imported lazily (the ``diffusers`` extra). The family tables live in :mod:`._diffusers_families`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from . import _diffusers_families as fam
from ._validate import check_flag, check_int
from .adapters import ContinuousDenoiser, DDPMDenoiser, ModelCall, learned_variance_for
from .flow import FlowDenoiser, flow_from_scheduler, flow_initial_x, flow_scheduler_sigmas
from .precond import EDMPrecond

__all__ = ["from_diffusers", "scheduler_sigmas", "start_state"]

Timestep = Literal["auto", "interpolate", "linear", "quantize"]


def _import_diffusers(what: str) -> Any:
    try:
        import diffusers
    except ImportError:
        raise ImportError(
            f"{what} needs the diffusers package: pip install 'edm-samplers[diffusers]' (or pip install diffusers)"
        ) from None
    return diffusers


def _check_vp_options(cfg: Mapping[str, Any], name: str) -> None:
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


def _resolve(scheduler_or_config: object, prediction: str | None, what: str) -> tuple[str, Any]:
    """(scheduler class name, scheduler instance) of a scheduler or a config mapping."""
    diffusers = _import_diffusers(what)
    if not isinstance(scheduler_or_config, Mapping):
        name = fam.known_class_of(scheduler_or_config)
        if name is None or not isinstance(getattr(scheduler_or_config, "config", None), Mapping):
            raise TypeError(
                "scheduler_or_config must be a diffusers scheduler (e.g. EulerDiscreteScheduler, "
                f"EDMEulerScheduler) or its config dict, got {type(scheduler_or_config).__name__}"
            )
        fam.check_class(name, TypeError, f"scheduler_or_config is an instance of {type(scheduler_or_config).__name__}")
        return name, scheduler_or_config
    cfg = dict(scheduler_or_config)
    # A .config lists in _use_default_values the keys it took as its class's defaults; from_config would replace
    # their (stated) values by the defaults of the class that reads it. The values are here: use them.
    cfg.pop("_use_default_values", None)
    name = cfg.get("_class_name")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"scheduler_or_config['_class_name'] must be a str, got {name!r}")
    if name is None:
        # scheduler.config has no _class_name: recognise the class by its exact set of keys.
        name = fam.class_by_signature(diffusers, cfg)
    if name is not None:
        fam.check_class(name, ValueError, f"scheduler_or_config['_class_name'] = {name!r}")
        cls = getattr(diffusers, name, None)
        if cls is None:
            raise ValueError(f"diffusers {diffusers.__version__} has no {name}; upgrade diffusers")
        # The named class reads its config exactly as diffusers does (its own defaults for missing keys).
        return name, cls.from_config(cfg)
    missing = _missing_schedule_keys(cfg)
    if prediction is None and "prediction_type" not in cfg:
        missing.append("prediction_type (or the prediction= argument)")
    if missing:
        raise ValueError(
            f"scheduler_or_config has no '_class_name' and lacks {', '.join(missing)}; a config without a class "
            "name (that no scheduler class takes exactly) is read as a DDPM config and must state its noise "
            "schedule and prediction type (no defaults are guessed). Pass the scheduler's saved config "
            "(scheduler_config.json), the scheduler itself, or add the keys"
        )
    return "DDPMScheduler", diffusers.DDPMScheduler.from_config(cfg)


def from_diffusers(
    model: Callable[..., Any],
    scheduler_or_config: object,
    *,
    prediction: str | None = None,
    timestep: Timestep = "auto",
    learned_variance: bool | None = None,
    net_dtype: torch.dtype | None = None,
    call: ModelCall | None = None,
    time_scale: float | None = None,
) -> DDPMDenoiser | EDMPrecond | ContinuousDenoiser | FlowDenoiser:
    """A diffusers model as a denoiser D(x; sigma) in EDM coordinates, for its scheduler's model family.

    - VP (DDPM, DDIM, PNDM, Euler, Euler ancestral, Heun, KDPM2, LMS, DPM-Solver multistep / singlestep / SDE,
      UniPC, DEIS, SA-Solver, LCM, TCD and their variants): :class:`DDPMDenoiser` on the scheduler's
      ``alphas_cumprod``; ``prediction_type`` "epsilon", "v_prediction" or "sample"; ``variance_type``
      "learned"/"learned_range" drops the variance channels.
    - EDM (``EDMEulerScheduler``, ``EDMDPMSolverMultistepScheduler``): :class:`EDMPrecond` with the scheduler's
      ``sigma_data``, range ``[sigma_min, sigma_max]`` and prediction ("epsilon" or "v_prediction").
    - VE (``ScoreSdeVeScheduler``): a :class:`ContinuousDenoiser` (VE, time input sigma) that reads the output as
      the score: D = x + sigma^2 F.
    - Flow matching (``FlowMatchEulerDiscreteScheduler``, ``FlowMatchHeunDiscreteScheduler``, DPM-Solver / UniPC
      with ``use_flow_sigmas=True, prediction_type="flow_prediction"``): :class:`~edm_samplers.FlowDenoiser`
      (:mod:`edm_samplers.flow`; dynamic shifting needs ``flow_scheduler_sigmas(scheduler, n, mu=...)``).

    A config mapping is dispatched on its ``_class_name`` (a saved ``scheduler_config.json``), or, without one (a
    ``scheduler.config``), on the one scheduler class taking exactly its keys; that class builds the scheduler
    with its own defaults, as diffusers would. A config no class takes exactly is read as a ``DDPMScheduler``
    config and must state ``num_train_timesteps``, ``trained_betas`` or ``beta_schedule`` (with ``beta_start``,
    ``beta_end`` unless "squaredcos_cap_v2") and ``prediction_type`` (or ``prediction=``).

    **Zero terminal SNR** (``rescale_betas_zero_snr=True``): the last level is sigma = inf (``den.sigma_max``), where
    the model sees pure noise; the diffusers schedulers that clamp abar_{T-1} to 2**-24 keep that clamp (sigma 4096,
    where their loop starts) unless it breaks the order of the levels. "epsilon" prediction cannot give x0 from
    pure noise: such a scheduler is rejected unless its clamp keeps every level finite.

    **Time input** (``timestep="auto"``): the scheduler's own convention, so a sampler on :func:`scheduler_sigmas`
    reproduces the diffusers loop: "linear" (Euler, Heun, LMS, KDPM2, DPM-Solver SDE without Karras, exponential or
    beta sigmas: their fractional timesteps index sigmas linearly), "quantize" (DPM-Solver, UniPC, DEIS: integer
    timesteps, rounded) or "interpolate" (log-sigma interpolation; the others, and every scheduler with Karras,
    exponential or beta sigmas). See :class:`DDPMDenoiser`.

    Sample with ``x = start_state(scheduler, latents, sigmas)`` on ``sigmas = scheduler_sigmas(scheduler, n)``, or
    with the library's schedules inside ``[den.sigma_min, den.sigma_max]`` (the samplers warn outside it).

    Args:
        model: the diffusers model, called ``model(x_t, t, **cond)``; held itself (``den.model is model``, or
            ``den.net`` for the EDM family).
        scheduler_or_config: a scheduler instance or its ``config`` mapping.
        prediction: override the config's ``prediction_type``.
        timestep: VP only: "auto" (above), "interpolate", "linear" or "quantize".
        learned_variance: VP only: whether the model returns mean and variance channels; None: from the model's
            config (``out_channels == 2 * in_channels``: DiT, PixArt-alpha), else the scheduler's ``variance_type``,
            else decided on the output's shape (:func:`~edm_samplers.adapters.learned_variance_for`).
        net_dtype: the precision the model runs in (e.g. ``torch.bfloat16`` autocasts a float32 model); D
            stays at least float32. See :class:`~edm_samplers.DDPMDenoiser`.
        call: VP and flow: a hook ``call(model, x_t, t, cond) -> output`` for a model the default call
            (``timestep`` by name where the signature needs it) does not fit.
        time_scale: flow only: the model's time input per unit flow time t (:class:`~edm_samplers.FlowDenoiser`);
            None reads it from the model class (SD3, Sana, Flux, AuraFlow) or raises.

    Raises:
        ImportError: if diffusers is not installed.
        TypeError: for a scheduler instance of an unsupported class.
        ValueError: for a config of an unsupported class or option, a class-less config missing schedule keys, an
            unsupported prediction type, or eps-prediction at zero terminal SNR.
    """
    if timestep not in ("auto", "interpolate", "linear", "quantize"):
        raise ValueError(f"timestep must be 'auto', 'interpolate', 'linear' or 'quantize', got {timestep!r}")
    name, sched = _resolve(scheduler_or_config, prediction, "from_diffusers")
    cfg: Mapping[str, Any] = sched.config
    family = fam.family_of(name)
    if family == "flow" or (family == "vp" and fam.is_flow_config(cfg)):
        if prediction is not None and prediction not in ("flow", "flow_prediction"):
            raise ValueError(f"{name} schedules a velocity (flow) model; got prediction={prediction!r}")
        if timestep != "auto":
            raise ValueError(
                f"timestep={timestep!r} applies to VP models; a flow model's time input is set by time_scale= "
                "(and the scheduler class: DPM-Solver/UniPC floor it)"
            )
        return flow_from_scheduler(
            model, sched, time_scale=time_scale, learned_variance=learned_variance, net_dtype=net_dtype, call=call
        )
    if time_scale is not None:
        raise ValueError(f"time_scale= applies to flow-matching schedulers only, got time_scale={time_scale!r}")
    if learned_variance is not None:
        check_flag(learned_variance, "learned_variance")
    if family != "vp" and (timestep != "auto" or learned_variance or call is not None):
        raise ValueError(
            f"{name} schedules a non-VP model: timestep=, learned_variance= and call= apply to VP (DDPM-family) "
            f"models only, got timestep={timestep!r}, learned_variance={learned_variance!r}, call={call!r}"
        )
    pred = prediction if prediction is not None else str(cfg.get("prediction_type", "epsilon"))
    if family == "edm":
        if pred not in ("epsilon", "v_prediction", "edm", "v"):
            raise ValueError(
                f"{name} with prediction_type={pred!r}: diffusers' EDM schedulers take 'epsilon' or 'v_prediction'"
            )
        return EDMPrecond(
            model,
            sigma_data=float(cfg["sigma_data"]),
            sigma_min=float(cfg["sigma_min"]),
            sigma_max=float(cfg["sigma_max"]),
            net_dtype=net_dtype,
            prediction=pred,
        )
    if family == "ve":
        if prediction is not None:
            raise ValueError(f"{name} schedules a score model (D = x + sigma^2 F): prediction= does not apply")
        lo, hi = float(cfg["sigma_min"]), float(cfg["sigma_max"])
        return _ScoreDenoiser(model, sigma_min=lo, sigma_max=hi, net_dtype=net_dtype)
    _check_vp_options(cfg, name)
    abar = fam.vp_alphas_cumprod(sched)
    if bool(abar[-1] == 0) and pred in ("epsilon", "eps"):
        raise ValueError(
            f"{name} has zero terminal SNR (alphas_cumprod[-1] = 0, sigma = inf) with prediction_type='epsilon': "
            "from pure noise an eps-prediction cannot give x0. Zero-SNR models predict v ('v_prediction'); for an "
            "eps model drop the last level: DDPMDenoiser(model, scheduler.alphas_cumprod[:-1])"
        )
    lv = learned_variance_for(model, cfg.get("variance_type")) if learned_variance is None else learned_variance
    mode = fam.timestep_rule(name, cfg) if timestep == "auto" else timestep
    return DDPMDenoiser(
        model, abar, prediction=pred, timestep=mode, learned_variance=lv, net_dtype=net_dtype, call=call
    )


class _ScoreDenoiser(ContinuousDenoiser):
    """A VE score model (diffusers' ``ScoreSdeVeScheduler``: ``model(x, sigma)`` returns grad log p(x; sigma)).

    D(x; sigma) = x + sigma^2 F(x, sigma) (EDM Eq. 3: grad log p = (D - x) / sigma^2).
    """

    def __init__(self, model: Callable[..., Any], *, sigma_min: float, sigma_max: float, net_dtype: torch.dtype | None):
        super().__init__(
            model,
            prediction="eps",
            parameterization="ve",
            sigma_min=sigma_min,
            sigma_max=sigma_max,
            net_dtype=net_dtype,
        )

    def to_denoised(self, x: Tensor, sigma: Tensor, out: Tensor) -> Tensor:
        return x + sigma**2 * out


def scheduler_sigmas(scheduler: object, num_steps: int, *, device: torch.device | str | None = None) -> Tensor:
    """The noise levels a diffusers scheduler visits in ``num_steps`` steps, in EDM units (float64).

    The scheduler is copied, not modified. ``sigmas[0]`` may be ``inf`` (a zero-terminal-SNR model sampled from
    pure noise, a flow model at t = 1); the last entry is 0, or the scheduler's last level when it stops above 0
    (``final_sigmas_type="sigma_min"``, DEIS, DDIM with ``set_alpha_to_one=False``). Two-stage schedulers (Heun,
    KDPM2, DPM-Solver SDE) give their main levels once. With :func:`start_state` and the matching sampler (see
    docs/diffusers.md, "Scheduler families"), the library reproduces the scheduler's loop.

    Args:
        scheduler: a diffusers scheduler instance (or its config mapping, as in :func:`from_diffusers`).
        num_steps: the ``num_inference_steps`` of ``scheduler.set_timesteps``.
        device: where the result goes (default CPU).

    Returns:
        ``[num_steps + 1]`` float64 levels, non-increasing (``[num_steps]`` for DEIS-like schedules that end at
        their last level; ScoreSdeVe: its ``num_steps`` levels then 0).

    Raises:
        TypeError / ValueError: as :func:`from_diffusers` for the scheduler; a bad ``num_steps``.
    """
    n = check_int(num_steps, "num_steps", minimum=1)
    name, sched = _resolve(scheduler, None, "scheduler_sigmas")
    cfg: Mapping[str, Any] = sched.config
    family = fam.family_of(name)
    if family == "flow" or (family == "vp" and fam.is_flow_config(cfg)):
        flow_sigmas = flow_scheduler_sigmas(sched, n)
        return flow_sigmas.to(device=device) if device is not None else flow_sigmas
    s = fam.set_timesteps_copy(sched, n)
    if family == "ve":
        s.set_sigmas(n)
        out = torch.cat([s.sigmas.detach().to("cpu", torch.float64), torch.zeros(1, dtype=torch.float64)])
    elif family == "edm":
        out = s.sigmas.detach().to("cpu", torch.float64)
    else:
        abar = fam.vp_alphas_cumprod(sched)
        out = fam.vp_schedule(name, s, torch.sqrt((1 - abar) / abar))
    return out.to(device=device) if device is not None else out


def start_state(scheduler: object, latents: Tensor, sigmas: Tensor) -> Tensor:
    """The sampler's starting x from unit-variance ``latents``, as the scheduler starts its loop.

    In EDM units (x = x_t / alpha_t for a VP model):

    - Euler-type schedulers (Euler, Euler ancestral, Heun, LMS, KDPM2, DPM-Solver SDE), whose state is x itself:
      ``latents * init_noise_sigma``, i.e. ``latents * sigmas[0]`` ("linspace"/"trailing" spacing) or
      ``latents * sqrt(sigmas[0]^2 + 1)`` ("leading"); ScoreSdeVe: ``latents * sigma_max``.
    - EDM schedulers: ``latents * sqrt(sigma_max^2 + 1)`` (diffusers' ``init_noise_sigma``, at sigma_max).
    - DDPM, DDIM, PNDM, DPM-Solver, UniPC, DEIS, LCM, TCD (state x_t = latents, ``init_noise_sigma = 1``):
      ``latents * sqrt(1 + sigmas[0]^2)``.
    - ``sigmas[0] = inf`` (zero terminal SNR, flow at t = 1): ``latents`` itself, the samplers' convention for
      pure noise.

    Args:
        scheduler: the diffusers scheduler (or its config mapping).
        latents: unit-variance noise of the sample's shape.
        sigmas: the schedule, e.g. :func:`scheduler_sigmas` (only ``sigmas[0]`` is read, once, on the host).

    Returns:
        A new tensor of ``latents``' shape and dtype.
    """
    if not isinstance(latents, Tensor) or not latents.is_floating_point():
        raise TypeError(f"latents must be a floating-point tensor, got {type(latents).__name__}")
    if not isinstance(sigmas, Tensor) or sigmas.ndim != 1 or sigmas.numel() < 1:
        raise TypeError("sigmas must be a 1-D tensor of noise levels, e.g. scheduler_sigmas(scheduler, n)")
    name, sched = _resolve(scheduler, None, "start_state")
    cfg: Mapping[str, Any] = sched.config
    family = fam.family_of(name)
    if family == "flow" or (family == "vp" and fam.is_flow_config(cfg)):
        return flow_initial_x(latents, sigmas)
    s0 = float(sigmas[0])
    if math.isinf(s0):
        return latents.clone()
    if not s0 > 0:
        raise ValueError(f"sigmas[0] must be > 0 (the starting noise level), got {s0}")
    if fam.uses_sigma_state(name):
        return fam.start_state_sigma_based(name, cfg, latents, s0)
    return latents * math.sqrt(1 + s0**2)
