"""Flow-matching (rectified-flow) models as EDM denoisers, and their schedules.

A flow model (SD3, Flux, Sana, AuraFlow, Wan, LTX-Video, ...) is trained on

    x_t = (1 - t) x_0 + t n,  t in [0, 1],  n ~ N(0, I),

to predict the velocity v = n - x_0 (so x_0 = x_t - t v). Dividing by 1 - t gives EDM's form x = x_0 + sigma n:

    sigma = t / (1 - t),  x = x_t / (1 - t)     (t = sigma / (1 + sigma),  x_t = x / (1 + sigma)),

and the denoiser is D(x; sigma) = x_t - t v. Every sampler of the library then runs on the model unchanged and
returns x_0; Euler in these coordinates is exactly diffusers' flow Euler step x_t' = x_t + (t' - t) v, and the
DPM-Solver++/UniPC updates are the same in both (they depend on lambda = ln((1 - t) / t) = -ln sigma only).

t = 1 (pure noise) is sigma = inf. There the state is the unit noise n itself (x_t = n) and D(n; inf) = n - v:
:class:`FlowDenoiser` accepts sigma = inf, and :func:`flow_sigmas` starts at inf when its first t is 1.

The model's time input is t times ``time_scale``, which depends on the model (what its diffusers pipeline passes):

=============================================  ==========================  =====================================
model (diffusers class)                        pipeline passes             ``time_scale``
=============================================  ==========================  =====================================
SD3Transformer2DModel (SD3, SD3.5)             ``scheduler.timesteps``     1000 (t * num_train_timesteps)
SanaTransformer2DModel                         timesteps * timestep_scale  1000 * ``config.timestep_scale``
FluxTransformer2DModel, Flux2, Chroma          ``timestep / 1000``         1 (the model multiplies by 1000)
AuraFlowTransformer2DModel                     ``t / 1000``                1
=============================================  ==========================  =====================================

DPMSolverMultistepScheduler and UniPCMultistepScheduler with ``use_flow_sigmas=True`` store their timesteps as
int64, so their pipelines (Sana, Wan) feed floor(1000 t) (times their scale): ``timestep="floor"`` reproduces
that.

This module holds the adapter and its construction from a diffusers model and scheduler; the schedules
(:func:`flow_sigmas`, :func:`flow_shift_mu`, :func:`flow_initial_x`) live in :mod:`._flow_schedules` and the
reading of diffusers' flow schedulers (:func:`flow_scheduler_sigmas`) in :mod:`._flow_diffusers`, both
re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from ._adapter import Adapter, LearnedVariance, ModelCall, learned_variance_for
from ._flow_diffusers import FLOW_OPTION, scheduler_and_config
from ._flow_diffusers import flow_scheduler_name as flow_scheduler_name
from ._flow_diffusers import flow_scheduler_sigmas as flow_scheduler_sigmas
from ._flow_schedules import Spacing as Spacing
from ._flow_schedules import TimeShift as TimeShift
from ._flow_schedules import flow_initial_x as flow_initial_x
from ._flow_schedules import flow_shift_mu as flow_shift_mu
from ._flow_schedules import flow_sigmas as flow_sigmas
from ._validate import check_float, check_int

__all__ = ["FlowDenoiser", "flow_initial_x", "flow_scheduler_sigmas", "flow_shift_mu", "flow_sigmas"]

FlowTimestep = Literal["continuous", "floor"]


def _t_of_sigma(sigma: Tensor) -> Tensor:
    # t = sigma / (1 + sigma) written as 1 / (1 + 1/sigma): exactly 1 at sigma = inf, with no branch or sync.
    return torch.reciprocal(1 + torch.reciprocal(sigma))


class FlowDenoiser(Adapter):
    """A velocity-predicting flow-matching model (x_t = (1 - t) x_0 + t n, v = n - x_0) as a denoiser.

    ``D(x; sigma) = x_t - t v`` with t = sigma / (1 + sigma) and model input x_t = x / (1 + sigma); at
    sigma = inf (t = 1) the state x is the unit noise itself and x_t = x. The model is called as the other
    adapters call it: ``model(x_t, timestep=t * time_scale, **cond)`` when its signature has ``timestep``
    elsewhere than 2nd (every diffusers transformer: SD3, Flux, Sana, AuraFlow), else ``model(x_t, t, **cond)``,
    or through a ``call`` hook. Conditioning goes by keyword in ``cond``: ``encoder_hidden_states``,
    ``pooled_projections`` (SD3, Flux), ``guidance`` (Flux), ``encoder_attention_mask`` (Sana). An output with
    ``.sample`` or a tuple is unwrapped.

    Args:
        model: the network (nn.Module, held itself) or any callable.
        time_scale: the model's time input per unit t; no default, since it differs by model (SD3 and Sana
            1000, Flux and AuraFlow 1: see the module's table). Must be > 0.
        timestep: "continuous" (t * time_scale, FlowMatchEulerDiscreteScheduler's float timesteps) or "floor"
            (floor(t * num_train_timesteps) * time_scale / num_train_timesteps: the int64 timesteps of
            DPMSolverMultistepScheduler / UniPCMultistepScheduler with ``use_flow_sigmas=True``, as their
            pipelines then scale them).
        num_train_timesteps: the integer grid of ``timestep="floor"`` (1000); unused otherwise.
        learned_variance: the model returns 2C channels on dim 1; keep the first C (Sana with
            ``out_channels = 2 * in_channels``); "auto" decides on the output's shape.
        net_dtype: the precision the model runs in (as for :class:`~edm_samplers.DDPMDenoiser`); D is computed
            in at least float32.
        call: a hook ``call(model, x_t, t, cond) -> output`` for a model the default call does not fit.

    Attributes:
        sigma_min, sigma_max: 0 and inf (t in [0, 1]).
    """

    def __init__(
        self,
        model: Callable[..., Any],
        *,
        time_scale: float,
        timestep: FlowTimestep = "continuous",
        num_train_timesteps: int = 1000,
        learned_variance: LearnedVariance = False,
        net_dtype: torch.dtype | None = None,
        call: ModelCall | None = None,
    ) -> None:
        # prediction="x0", vp=False only satisfy the base class: model_input and to_denoised are this family's.
        super().__init__(
            model,
            prediction="x0",
            vp=False,
            sigma_min=0.0,
            sigma_max=math.inf,
            learned_variance=learned_variance,
            net_dtype=net_dtype,
            call=call,
        )
        self.time_scale = check_float(time_scale, "time_scale", positive=True)
        if timestep not in ("continuous", "floor"):
            raise ValueError(
                f"timestep must be 'continuous' (t * time_scale) or 'floor' (floor(t * time_scale), the int64 "
                f"timesteps of DPM-Solver/UniPC with flow sigmas), got {timestep!r}"
            )
        self.timestep: FlowTimestep = timestep
        self.num_train_timesteps = check_int(num_train_timesteps, "num_train_timesteps", minimum=1)

    @property
    def supports_infinite_sigma(self) -> bool:
        """True: t = 1 (sigma = inf) is pure noise, where the model sees the unit noise itself."""
        return True

    @property
    def infinite_sigma_reason(self) -> str:
        return ""

    def model_input(self, x: Tensor, sigma: Tensor) -> Tensor:
        """x_t = x / (1 + sigma); at sigma = inf the state is the unit noise and x_t = x (no host sync)."""
        return torch.where(torch.isinf(sigma), x, x / (1 + sigma))

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        """The model's time input t * time_scale (or on the floored grid), t = sigma / (1 + sigma), in float64."""
        t = _t_of_sigma(sigma.to(torch.float64))
        if self.timestep == "floor":
            nt = self.num_train_timesteps
            return torch.floor(t * nt) * (self.time_scale / nt)
        return t * self.time_scale

    def to_denoised(self, x: Tensor, sigma: Tensor, out: Tensor) -> Tensor:
        """D = x_t - t v from the velocity v = ``out``."""
        return self.model_input(x, sigma) - _t_of_sigma(sigma) * out


# ---- from a diffusers scheduler ------------------------------------------------------------------------

# diffusers transformer class -> (the time input per unit t its pipeline passes, as a function of the model).
_TIME_SCALES: dict[str, Callable[[Any, int], float]] = {
    "SD3Transformer2DModel": lambda m, nt: float(nt),
    "SanaTransformer2DModel": lambda m, nt: float(nt) * float(getattr(m.config, "timestep_scale", 1.0)),
    "FluxTransformer2DModel": lambda m, nt: nt / 1000.0,
    "Flux2Transformer2DModel": lambda m, nt: nt / 1000.0,
    "ChromaTransformer2DModel": lambda m, nt: nt / 1000.0,
    "AuraFlowTransformer2DModel": lambda m, nt: nt / 1000.0,
}


def flow_from_scheduler(
    model: Callable[..., Any],
    scheduler_or_config: object,
    *,
    time_scale: float | None = None,
    learned_variance: LearnedVariance | None = None,
    net_dtype: torch.dtype | None = None,
    call: ModelCall | None = None,
) -> FlowDenoiser:
    """:func:`~edm_samplers.from_diffusers` for flow schedulers (private to the package).

    ``time_scale``: given, or read from the model class (the module's table) times num_train_timesteps / 1000;
    an unknown model without ``time_scale`` is an error (no silent default). ``timestep``: "floor" for
    DPM-Solver/UniPC (int64 timesteps), "continuous" for FlowMatch*. ``learned_variance``: given, or from the
    model's config (:func:`~edm_samplers.adapters.learned_variance_for`: ``out_channels == 2 * in_channels``).
    """
    # A config without '_class_name' may leave the class open (Euler or Heun, DPM-Solver or UniPC): the model is
    # called alike either way.
    _, cfg, name = scheduler_and_config(scheduler_or_config, "scheduler_or_config", need_class=False)
    if cfg.get("stochastic_sampling"):
        raise ValueError(
            f"{name} has stochastic_sampling=True (each step re-noises the x_0 prediction: a different sampler); "
            "from_diffusers reads the deterministic flow ODE only. Set stochastic_sampling=False"
        )
    nt = int(cfg.get("num_train_timesteps", 1000))
    if time_scale is None:
        cls = type(model).__name__
        rule = _TIME_SCALES.get(cls)
        if rule is None:
            raise ValueError(
                f"from_diffusers cannot tell the time input of a {cls} model for {name} (a flow-matching "
                "scheduler): pass time_scale= (the "
                "model's timestep per unit flow time t: 1000 if its pipeline passes scheduler.timesteps, as SD3 "
                "and Sana do; 1 if it passes timestep / 1000, as Flux and AuraFlow do)"
            )
        time_scale = rule(model, nt)
    if learned_variance is None:
        learned_variance = learned_variance_for(model, None)
    return FlowDenoiser(
        model,
        time_scale=time_scale,
        timestep="floor" if name in FLOW_OPTION else "continuous",
        num_train_timesteps=nt,
        learned_variance=learned_variance,
        net_dtype=net_dtype,
        call=call,
    )
