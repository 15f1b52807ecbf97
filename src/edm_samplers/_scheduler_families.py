"""The model families of the drop-in scheduler (:mod:`.diffusers_scheduler`): one :class:`Family` per adapter class
that :func:`~edm_samplers.from_diffusers` returns, and the hooks it builds from the replaced scheduler's config.

Each family says how its models meet a pipeline: the timesteps the pipeline passes to the model, where the first
sample starts (the same start as :func:`~edm_samplers.start_state`, so ``sampler="euler"`` with
``schedule="scheduler"`` reproduces diffusers' own loop), and the replaced scheduler's own levels after a
``set_timesteps`` with the pipeline's ``sigmas`` / ``mu``. Private: the public class is
:class:`~edm_samplers.diffusers_scheduler.EDMSamplerScheduler`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol, cast

import torch
from torch import Tensor

from . import _diffusers_families as fam
from .diffusers_adapter import from_diffusers
from .flow import flow_scheduler_name

__all__ = ["FAMILIES", "Family", "Hooks", "PipelineNoise", "build_hooks", "family_of", "pipeline_config"]


class Hooks(Protocol):
    """What the scheduler uses of an adapter (``_adapter.Adapter``, or a ``Precond``): the steps of its forward."""

    @property
    def learned_variance(self) -> object: ...

    sigma_min: float
    sigma_max: float

    def model_input(self, x: Tensor, sigma: Tensor) -> Tensor: ...

    def sigma_to_t(self, sigma: Tensor) -> Tensor: ...

    def to_denoised(self, x: Tensor, sigma: Tensor, out: Tensor) -> Tensor: ...


class Family(NamedTuple):
    """How the models of one family meet a pipeline (one entry of :data:`FAMILIES`).

    Attributes:
        timesteps: ``(hooks, sigma [K] in the state dtype) -> [K]``: the ``timesteps`` the pipeline passes to
            the model for those noise levels (the replaced scheduler's units).
        init_noise_sigma: ``(hooks, sigma_0) -> float``: the standard deviation of the pipeline's first sample
            (the model's input s(sigma_0) x). The first state is then ``latents * init_noise_sigma / s(sigma_0)``
            in EDM units, which is where :func:`~edm_samplers.start_state` starts the replaced scheduler's loop
            (at sigma_0 = inf: the unit noise itself).
        own_levels: ``(replaced scheduler after set_timesteps(n, sigmas=..., mu=...), its class name) -> [N + 1]``
            float64 levels in EDM units: its own schedule for the pipeline's ``sigmas`` (without them the
            scheduler uses :func:`~edm_samplers.scheduler_sigmas`).
    """

    timesteps: Callable[[Hooks, Tensor], Tensor]
    init_noise_sigma: Callable[[Hooks, float], float]
    own_levels: Callable[[Any, str], Tensor]


def _own_vp(sched: Any, name: str) -> Tensor:
    abar = fam.vp_alphas_cumprod(sched)
    return fam.vp_schedule(name, sched, torch.sqrt((1 - abar) / abar))


def _own_edm(sched: Any, name: str) -> Tensor:
    del name
    return torch.as_tensor(sched.sigmas).detach().to("cpu", torch.float64)


def _own_ve(sched: Any, name: str) -> Tensor:
    raise ValueError(f"{name} takes no sigmas= in set_timesteps; call the pipeline with num_inference_steps only")


def _own_flow(sched: Any, name: str) -> Tensor:
    t = torch.as_tensor(sched.sigmas).detach().to("cpu", torch.float64)
    if name == "FlowMatchHeunDiscreteScheduler":
        t = torch.cat([t[:1], t[1:-1:2], t[-1:]])  # levels 1 .. N-1 appear twice (Heun's two stages)
    return t / (1 - t)  # t = 1 is sigma = inf, t = 0 is 0


def _input_scale(hooks: Hooks, sigma: float) -> float:
    """s(sigma): the model's input is s x."""
    return float(hooks.model_input(torch.ones(1, dtype=torch.float64), torch.full((1,), sigma, dtype=torch.float64)))


def _model_time(hooks: Hooks, sigma: Tensor) -> Tensor:
    return hooks.sigma_to_t(sigma)


FAMILIES: dict[str, Family] = {
    # Discrete-time VP (DDPM-family) models: eps, v and sample prediction; zero terminal SNR too (sigma_0 = inf,
    # where the model input is the unit noise itself). The timesteps are the adapter's own (fractional trained
    # steps); the first sample is unit noise (x_t at sigma_0), the state of DDIM, DPM-Solver and UniPC.
    "DDPMDenoiser": Family(
        timesteps=_model_time,
        init_noise_sigma=lambda hooks, s0: 1.0,
        own_levels=_own_vp,
    ),
    # EDM-trained models (EDMEulerScheduler, EDMDPMSolverMultistepScheduler): the model takes c_in x and
    # c_noise = ln(sigma) / 4; diffusers starts them at latents * sqrt(sigma_0^2 + 1) (a VP habit).
    "EDMPrecond": Family(
        timesteps=_model_time,
        init_noise_sigma=lambda hooks, s0: math.sqrt(s0 * s0 + 1) * _input_scale(hooks, s0),
        own_levels=_own_edm,
    ),
    # VE score models (ScoreSdeVeScheduler): the model takes x itself and sigma; the start is latents * sigma_0.
    "_ScoreDenoiser": Family(timesteps=_model_time, init_noise_sigma=lambda hooks, s0: s0, own_levels=_own_ve),
    # Flow matching: timesteps t * num_train_timesteps, as diffusers' flow schedulers emit them (the pipelines
    # scale them for their model: Flux divides by 1000, Sana multiplies by timestep_scale); the first sample
    # is x_t = latents whatever t_0 (1 + sigma_0 in EDM units; the noise itself at t = 1).
    "FlowDenoiser": Family(
        timesteps=_model_time,
        init_noise_sigma=lambda hooks, s0: 1.0,
        own_levels=_own_flow,
    ),
}
"""Adapter class name (what :func:`~edm_samplers.from_diffusers` returns for a family) -> :class:`Family`."""


def family_of(hooks: object) -> Family:
    name = type(hooks).__name__
    found = FAMILIES.get(name)
    if found is None:
        raise ValueError(
            f"EDMSamplerScheduler has no family entry for {name} (the adapter from_diffusers built for this "
            f"config); known: {', '.join(FAMILIES)}"
        )
    return found


class _PipelineModel:
    """Stands in for the model in the adapter the scheduler builds: the pipeline calls the real one."""

    def __call__(self, *args: object, **kwargs: object) -> Tensor:
        del args, kwargs
        raise RuntimeError("EDMSamplerScheduler's adapter is used for its hooks only; the pipeline calls the model")


def build_hooks(cfg: object) -> Hooks:
    """The adapter :func:`~edm_samplers.from_diffusers` builds for the replaced scheduler's config, as hooks.

    A flow model's time input depends on the model (``time_scale``), which the scheduler never sees: its
    timesteps are t * ``num_train_timesteps``, what diffusers' flow schedulers emit and their pipelines scale.
    """
    if not isinstance(cfg, Mapping):
        raise TypeError(
            "model_config must be the config of the diffusers scheduler the model was trained with "
            f"(use EDMSamplerScheduler.from_config(pipe.scheduler.config, ...)), got {type(cfg).__name__}"
        )
    kw: dict[str, Any] = {}
    if flow_scheduler_name(cfg) is not None:
        kw["time_scale"] = float(cfg.get("num_train_timesteps", 1000))
    den = from_diffusers(_PipelineModel(), cfg, **kw)
    family_of(den)  # a ValueError naming the family when it has no entry (before the Hooks protocol is relied on)
    return cast(Hooks, den)


class PipelineNoise:
    """The noise of stochastic samplers, drawn from the ``generator`` the pipeline passed to ``step``.

    A list of generators draws row by row (row k from generator k: per-sample seeds), as diffusers'
    ``randn_tensor`` does; None draws from torch's global RNG.
    """

    def __init__(self) -> None:
        self.generator: torch.Generator | list[torch.Generator] | None = None

    def randn(self, shape: Sequence[int], *, dtype: torch.dtype, device: torch.device) -> Tensor:
        from diffusers.utils.torch_utils import randn_tensor

        gen = self.generator
        if isinstance(gen, list) and len(gen) != shape[0]:
            raise ValueError(
                f"step() got a list of {len(gen)} generators for a batch of {shape[0]}; pass one generator per "
                "sample (or a single generator)"
            )
        out: Tensor = randn_tensor(tuple(shape), generator=gen, device=torch.device(device), dtype=torch.float32)
        return out.to(dtype)


_CONFIG: type | None = None


def pipeline_config(own: Mapping[str, Any]) -> Mapping[str, Any]:
    """The scheduler's config as pipelines read it: a key it lacks (``use_dynamic_shifting``,
    ``base_image_seq_len``, ``use_flow_sigmas``, ...) is the replaced scheduler's (``model_config``), through ``get``
    or an attribute; iterating, indexing and saving see its own keys only. (A diffusers ``FrozenDict``.)"""
    global _CONFIG
    if _CONFIG is None:
        from diffusers.configuration_utils import FrozenDict

        class PipelineConfig(FrozenDict):
            def _replaced_config(self) -> Mapping[str, Any]:
                mc = OrderedDict.get(self, "model_config")
                return mc if isinstance(mc, Mapping) else {}

            def get(self, key: str, default: Any = None) -> Any:
                if key in self:
                    return OrderedDict.get(self, key)
                return self._replaced_config().get(key, default)

            def __getattr__(self, name: str) -> Any:  # only for names normal lookup does not find
                mc = self._replaced_config()
                if name.startswith("__") or name not in mc:
                    raise AttributeError(name)
                return mc[name]

        _CONFIG = PipelineConfig
    return cast(Mapping[str, Any], _CONFIG(own))
