"""The diffusers scheduler families behind :func:`~edm_samplers.from_diffusers`: which class schedules which
model family, how a config without ``_class_name`` is recognised, and what each scheduler means in EDM
coordinates (its model-time convention, its sigmas for N steps, its starting state). Private; the public
functions are in :mod:`.diffusers_adapter`.

diffusers is never imported here at module level; every function that needs it receives the module.
"""

from __future__ import annotations

import copy
import inspect
import math
import warnings
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor

__all__ = [
    "EDM",
    "FLOW",
    "SUPPORTED_HINT",
    "UNSUPPORTED",
    "VE",
    "VP",
    "ZERO_SNR_CLAMP",
    "check_class",
    "class_by_signature",
    "family_of",
    "is_flow_config",
    "known_class_of",
    "set_timesteps_copy",
    "start_state_sigma_based",
    "timestep_rule",
    "uses_sigma_state",
    "vp_alphas_cumprod",
    "vp_schedule",
]

# diffusers schedulers whose model is a discrete-time VP (DDPM-family) model: noise levels from alphas_cumprod.
# LCM and TCD schedule consistency-distilled VP models: the network is still an eps/v/x0 predictor at a
# trained timestep (LCM's boundary scalings c_skip, c_out only blend in near t = 0).
VP = frozenset(
    {
        "DDPMScheduler", "DDPMParallelScheduler", "DDIMScheduler", "DDIMParallelScheduler", "DDIMInverseScheduler",
        "PNDMScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler",
        "LMSDiscreteScheduler", "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler",
        "DPMSolverMultistepScheduler", "DPMSolverMultistepInverseScheduler", "DPMSolverSinglestepScheduler",
        "DPMSolverSDEScheduler", "DEISMultistepScheduler", "UniPCMultistepScheduler", "SASolverScheduler",
        "RePaintScheduler", "UnCLIPScheduler", "CogVideoXDDIMScheduler", "CogVideoXDPMScheduler",
        "LCMScheduler", "TCDScheduler",
    }
)  # fmt: skip
EDM = frozenset({"EDMEulerScheduler", "EDMDPMSolverMultistepScheduler"})
VE = frozenset({"ScoreSdeVeScheduler"})
FLOW = frozenset(
    {
        "FlowMatchEulerDiscreteScheduler",
        "FlowMatchHeunDiscreteScheduler",
        "FlowMatchLCMScheduler",
        "FlowMapEulerDiscreteScheduler",
        "LTXEulerAncestralRFScheduler",
    }
)
# Known, and rejected with the reason.
UNSUPPORTED = {
    "KarrasVeScheduler": "a VE model with Karras's stochastic sampler (deprecated in diffusers); use "
    "ScoreSdeVeScheduler's config or wrap the network with ContinuousDenoiser(parameterization='ve')",
    "CMStochasticIterativeScheduler": "a consistency model (a consistency map, not a denoiser of the ODE)",
    "SCMScheduler": "a continuous-time consistency model (TrigFlow), not a denoiser of the ODE",
}
SUPPORTED_HINT = (
    "from_diffusers supports the VP (DDPM-family, LCM, TCD), EDM (EDMEulerScheduler, EDMDPMSolverMultistepScheduler), "
    "VE (ScoreSdeVeScheduler) and flow-matching scheduler families; for another model wrap the network yourself "
    "(ContinuousDenoiser, DDPMDenoiser or a Precond)"
)

# Model-time conventions (DDPMDenoiser's ``timestep=``) of the VP schedulers, read from their set_timesteps:
# fractional linspace timesteps whose sigmas are np.interp'd linearly in sigma ("linear"), unless a Karras /
# exponential / beta / log-linear schedule gives t = _sigma_to_t(sigma), log-sigma interpolation ("interpolate");
# the DPM-Solver family rounds its timesteps to integers ("quantize": nearest step in log sigma = round(t)).
_LINEAR_T = frozenset(
    {
        "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler", "LMSDiscreteScheduler",
        "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler", "DPMSolverSDEScheduler",
    }
)  # fmt: skip
_ROUNDED_T = frozenset(
    {
        "DPMSolverMultistepScheduler", "DPMSolverMultistepInverseScheduler", "DPMSolverSinglestepScheduler",
        "DEISMultistepScheduler", "UniPCMultistepScheduler", "CogVideoXDPMScheduler",
    }
)  # fmt: skip
# DDIM steps from t to t - T // n, whatever the next timestep is.
_FIXED_STRIDE = frozenset({"DDIMScheduler", "DDIMParallelScheduler", "CogVideoXDDIMScheduler"})
# Schedulers whose loop state is EDM's x (Euler-type: latents * init_noise_sigma); the others keep the VP x_t
# (init_noise_sigma = 1).
_SIGMA_STATE = _LINEAR_T | EDM | VE
_SIGMA_FLAGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")
# diffusers' zero-terminal-SNR clamp in Euler, DPM-Solver, UniPC...: alphas_cumprod[-1] = 2**-24 (sigma 4096).
ZERO_SNR_CLAMP = 2.0**-24
_CLAMP_SIGMA = math.sqrt(1 / ZERO_SNR_CLAMP - 1)


def family_of(name: str) -> str | None:
    """ "vp", "edm", "ve", "flow", or None for a class no family claims."""
    for fam, names in (("vp", VP), ("edm", EDM), ("ve", VE), ("flow", FLOW)):
        if name in names:
            return fam
    return None


def check_class(name: str, exc: type[Exception], what: str) -> str:
    """The family of scheduler class ``name``, or ``exc`` naming it."""
    fam = family_of(name)
    if fam is not None:
        return fam
    reason = UNSUPPORTED.get(name)
    msg = f"{name} schedules {reason}, not supported" if reason else f"{name} is not a known scheduler"
    raise exc(f"{what}: {msg}. {SUPPORTED_HINT}")


def known_class_of(scheduler: object) -> str | None:
    """The first class in ``type(scheduler).__mro__`` that is a known scheduler (supported or not)."""
    for c in type(scheduler).__mro__:
        if family_of(c.__name__) is not None or c.__name__ in UNSUPPORTED:
            return c.__name__
    return None


def is_flow_config(cfg: Mapping[str, Any]) -> bool:
    """A VP-family scheduler configured for a flow-matching model (``use_flow_sigmas``/``flow_prediction``)."""
    return bool(cfg.get("use_flow_sigmas")) or cfg.get("prediction_type") == "flow_prediction"


def class_by_signature(diffusers: Any, cfg: Mapping[str, Any]) -> str | None:
    """A known scheduler class whose ``__init__`` takes exactly the keys of ``cfg`` (a ``scheduler.config``
    without ``_class_name``), or None when no class, or several different kinds of class, match."""
    keys = {k for k in cfg if not k.startswith("_")}
    hits = []
    for name in sorted(VP | EDM | VE | FLOW | frozenset(UNSUPPORTED)):
        cls = getattr(diffusers, name, None)
        if cls is None:
            continue
        params = set(inspect.signature(cls.__init__).parameters) - {"self"}
        if params == keys:
            hits.append(name)
    # Several classes with one signature (e.g. the Euler-type ones) are interchangeable here when they share the
    # family, the time convention and the kind of loop state.
    kinds = {(family_of(n), n in _ROUNDED_T, n in _LINEAR_T, n in _SIGMA_STATE, n.startswith("KDPM2")) for n in hits}
    return hits[0] if len(kinds) == 1 else None


def timestep_rule(name: str, cfg: Mapping[str, Any]) -> Literal["interpolate", "linear", "quantize"]:
    """The model-time convention of a VP scheduler (see ``_LINEAR_T``)."""
    if name in _ROUNDED_T:
        return "quantize"
    if name.startswith("KDPM2"):
        # Its midpoints' timesteps are log-sigma interpolated (_sigma_to_t); its main levels match that for integer
        # timesteps ("leading"/"trailing" spacing) only: fractional "linspace" ones, or the rounded timesteps of
        # its Karras sigmas, cannot follow both rules.
        return "interpolate"
    if name in _LINEAR_T:
        logsig = any(cfg.get(k) for k in _SIGMA_FLAGS) or cfg.get("interpolation_type") == "log_linear"
        return "interpolate" if logsig else "linear"
    return "interpolate"


def vp_alphas_cumprod(scheduler: Any) -> Tensor:
    """``alphas_cumprod`` (float64) of a VP scheduler instance.

    A zero-SNR scheduler either keeps abar_{T-1} = 0 (DDPM, DDIM: sigma = inf) or clamps it to 2**-24 (Euler,
    DPM-Solver, UniPC: sigma = 4096, the level its own loop starts from). The clamp is kept when the table stays
    decreasing (then the adapter evaluates the model where diffusers does); where it breaks the order (the
    default DDPM betas, abar_{T-2} < 2**-24) it is undone: abar_{T-1} = 0, sigma = inf, the model's true level.
    """
    abar = torch.as_tensor(scheduler.alphas_cumprod).detach().to("cpu", torch.float64).clone()
    zero_snr = bool(scheduler.config.get("rescale_betas_zero_snr", False))
    if zero_snr and abar.numel() >= 2 and float(abar[-1]) == ZERO_SNR_CLAMP and not abar[-1] < abar[-2]:
        abar[-1] = 0.0
    return abar


def start_state_sigma_based(name: str, cfg: Mapping[str, Any], latents: Tensor, sigma0: float) -> Tensor:
    """``latents * init_noise_sigma`` for a scheduler whose loop state is EDM's x."""
    if name in EDM:
        # diffusers' EDM schedulers start at sqrt(sigma_max^2 + 1), a VP habit; the state is still at sigma_max.
        return latents * math.sqrt(float(cfg["sigma_max"]) ** 2 + 1)
    if name in VE or cfg.get("timestep_spacing", "linspace") in ("linspace", "trailing"):
        return latents * sigma0
    return latents * math.sqrt(sigma0**2 + 1)


def uses_sigma_state(name: str) -> bool:
    return name in _SIGMA_STATE


def set_timesteps_copy(scheduler: Any, num_steps: int) -> Any:
    """A deep copy of ``scheduler`` after ``set_timesteps(num_steps)`` on the CPU (the user's scheduler is not
    touched)."""
    s = copy.deepcopy(scheduler)
    s.set_timesteps(num_steps)
    return s


def vp_schedule(name: str, sched: Any, table: Tensor) -> Tensor:
    """The EDM sigmas (float64, on the CPU) of a VP scheduler after ``set_timesteps``.

    Schedulers with a ``sigmas`` array (Euler-type, DPM-Solver, UniPC, DEIS) use it, with the repeats of the
    two-stage ones (Heun, KDPM2, DPM-Solver SDE) dropped; the others (DDPM, DDIM, PNDM, LCM, TCD) give the
    trained levels of their integer timesteps, then their final level: 0, or sigma_{t=0} when
    ``set_alpha_to_one=False``.
    """
    sig = getattr(sched, "sigmas", None)
    if isinstance(sig, Tensor) and sig.ndim == 1 and sig.numel() >= 2:
        s: Tensor = torch.unique_consecutive(sig.detach().to("cpu", torch.float64))
        if bool(torch.isinf(table[-1])) and abs(float(s[0]) - _CLAMP_SIGMA) < 1e-6 * _CLAMP_SIGMA:
            s[0] = math.inf  # the undone clamp (vp_alphas_cumprod): start where the model was trained
        return s
    t = torch.unique_consecutive(torch.as_tensor(sched.timesteps).detach().to("cpu", torch.int64))
    if name in _FIXED_STRIDE and t.numel() > 1:
        stride = int(sched.config["num_train_timesteps"]) // int(sched.num_inference_steps)
        if bool((t[:-1] - t[1:] != stride).any()):
            warnings.warn(
                f"{name} steps from timestep t to t - {stride} (num_train_timesteps // num_inference_steps) but then "
                f"evaluates the model at its next timestep, which differs here ({t.tolist()}, "
                f"timestep_spacing={sched.config.get('timestep_spacing')!r}): its loop has no single noise schedule. "
                "These sigmas are its timesteps' levels; to match it, use timestep_spacing='leading' or a "
                "num_inference_steps that divides num_train_timesteps",
                UserWarning,
                stacklevel=3,
            )
    last = table[0] if sched.config.get("set_alpha_to_one", True) is False else torch.zeros((), dtype=torch.float64)
    return torch.cat([table[t], last.reshape(1)])
