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
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from ._validate import check_float, check_int
from .adapters import LearnedVariance, ModelCall, _Adapter, learned_variance_for

__all__ = ["FlowDenoiser", "flow_initial_x", "flow_scheduler_sigmas", "flow_shift_mu", "flow_sigmas"]

FlowTimestep = Literal["continuous", "floor"]


def _t_of_sigma(sigma: Tensor) -> Tensor:
    # t = sigma / (1 + sigma) written as 1 / (1 + 1/sigma): exactly 1 at sigma = inf, with no branch or sync.
    return torch.reciprocal(1 + torch.reciprocal(sigma))


class FlowDenoiser(_Adapter):
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


# ---- schedules -------------------------------------------------------------------------------------------

TimeShift = Literal["exponential", "linear"]
Spacing = Literal["linear", "karras", "exponential", "beta"]


def flow_shift_mu(
    image_seq_len: int,
    *,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
) -> float:
    """The resolution-dependent shift exponent mu (Flux; diffusers' ``calculate_shift``).

    Linear in the number of image tokens: mu = base_shift at ``base_seq_len`` and max_shift at ``max_seq_len``
    (extrapolated beyond). Defaults are FlowMatchEulerDiscreteScheduler's (``base_image_seq_len`` 256,
    ``max_image_seq_len`` 4096, ``base_shift`` 0.5, ``max_shift`` 1.15); Flux-dev's scheduler config uses
    these, other models store their own in ``scheduler.config``. For Flux the token count is
    (height / 16) * (width / 16) (VAE factor 8, 2x2 packing).
    """
    n = check_int(image_seq_len, "image_seq_len", minimum=1)
    lo_n = check_int(base_seq_len, "base_seq_len", minimum=1)
    hi_n = check_int(max_seq_len, "max_seq_len", minimum=1)
    if hi_n == lo_n:
        raise ValueError(f"max_seq_len must differ from base_seq_len, got both {lo_n}")
    lo_s = check_float(base_shift, "base_shift")
    hi_s = check_float(max_shift, "max_shift")
    m = (hi_s - lo_s) / (hi_n - lo_n)
    return n * m + (lo_s - m * lo_n)


def _static_shift(t: Tensor, shift: float) -> Tensor:
    # s t / (1 + (s - 1) t) written as s t / (s t + (1 - t)): exactly 1 at t = 1 for every s (the first form
    # rounds to 1 + 2e-16 for s = 0.1, a level above pure noise).
    return shift * t / (shift * t + (1 - t))


def _dynamic_shift(t: Tensor, mu: float, kind: TimeShift) -> Tensor:
    # diffusers' time_shift(mu, 1.0, t): exp(mu) / (exp(mu) + (1/t - 1)) or mu / (mu + (1/t - 1)); 1 at t = 1.
    a = math.exp(mu) if kind == "exponential" else mu
    # As 1 / (1 + (1/t - 1) / a): exactly 1 at t = 1 (torch evaluates number / tensor as a reciprocal times the
    # number, which rounds a / (a + 0) to 1 - 1e-16).
    return 1 / (1 + (1 / t - 1) / a)


def _t_to_sigmas(t: Tensor, what: str) -> Tensor:
    """Flow times (decreasing, in (0, 1]) -> EDM sigmas t / (1 - t) (inf at t = 1) with a final 0 appended."""
    if t.numel() == 0 or not bool(torch.isfinite(t).all()) or bool((t <= 0).any()) or bool((t > 1).any()):
        raise ValueError(
            f"{what}: the flow times t must lie in (0, 1], got {t.tolist()}; check shift, mu and shift_terminal"
        )
    if t.numel() > 1 and bool((t[1:] >= t[:-1]).any()):
        raise ValueError(f"{what}: the flow times t must be strictly decreasing, got {t.tolist()}")
    sig = t / (1 - t)  # t = 1 gives +inf (x / 0 for x > 0)
    return torch.cat([sig, sig.new_zeros(1)])


def flow_sigmas(
    num_steps: int,
    *,
    shift: float = 1.0,
    mu: float | None = None,
    time_shift: TimeShift = "exponential",
    shift_terminal: float | None = None,
    spacing: Spacing = "linear",
    t_max: float = 1.0,
    t_min: float | None = None,
    num_train_timesteps: int = 1000,
) -> Tensor:
    """FlowMatchEulerDiscreteScheduler's schedule for ``num_steps`` steps, as EDM sigmas (float64, CPU).

    In flow time, as diffusers 0.42 builds it:

    1. t_i = t_max + i/(N-1) (t_min - t_max), i = 0 .. N-1;
    2. shifted: static t -> shift t / (1 + (shift - 1) t), or with ``mu`` (dynamic, resolution-dependent
       shifting) t -> e^mu / (e^mu + 1/t - 1) (``time_shift="exponential"``) or mu / (mu + 1/t - 1)
       ("linear");
    3. with ``shift_terminal``: stretched so the last t is ``shift_terminal``: 1 - t -> (1 - t) (1 -
       shift_terminal) / (1 - t_{N-1});
    4. with ``spacing`` "karras" (rho = 7), "exponential" (uniform in log t) or "beta" (Beta(0.6, 0.6) quantiles;
       needs scipy) re-spaced between the first and last t (``use_karras_sigmas`` etc.);

    then sigma_i = t_i / (1 - t_i) (inf where t_i = 1) and a final 0. The scheduler computes in float32, so its
    own values differ from these by float32 round-off (use :func:`flow_scheduler_sigmas` for its exact values).

    Args:
        num_steps: N >= 1.
        shift: the static shift (SD3: 3.0); must stay 1 when ``mu`` is given.
        mu: the dynamic-shift exponent (:func:`flow_shift_mu`); None for static shifting.
        time_shift: "exponential" or "linear" (used with ``mu``).
        shift_terminal: the last t after stretching (LTX-Video), in (0, 1); None for no stretching.
        spacing: "linear" (the default grid), "karras", "exponential" or "beta".
        t_max: the first t of the grid, in (0, 1]; 1 (pure noise, sigma = inf) as in diffusers.
        t_min: the last t of the unshifted grid; None: diffusers' choice, 1/num_train_timesteps, statically
            shifted once already (FlowMatchEulerDiscreteScheduler takes it from its shifted training levels, so
            with static shifting the last level is shifted twice).
        num_train_timesteps: for the default ``t_min`` (1000).

    Returns:
        ``[num_steps + 1]`` float64: sigma_0 (inf when t_0 = 1) > ... > sigma_{N-1} > 0, then 0.

    Raises:
        ValueError / TypeError: for num_steps < 1, shift <= 0, shift != 1 together with mu, an unknown
            time_shift or spacing, t_max or t_min outside (0, 1] or t_min >= t_max, or shifted times that leave
            (0, 1] or stop decreasing.
    """
    n = check_int(num_steps, "num_steps", minimum=1)
    s = check_float(shift, "shift", positive=True)
    if time_shift not in ("exponential", "linear"):
        raise ValueError(f"time_shift must be 'exponential' or 'linear', got {time_shift!r}")
    if spacing not in ("linear", "karras", "exponential", "beta"):
        raise ValueError(f"spacing must be 'linear', 'karras', 'exponential' or 'beta', got {spacing!r}")
    m: float | None = None
    if mu is not None:
        m = check_float(mu, "mu")
        if s != 1.0:
            raise ValueError(
                f"pass shift (static shifting) or mu (dynamic shifting), not both: got shift={s}, mu={m}; "
                "diffusers ignores shift when use_dynamic_shifting=True"
            )
        if time_shift == "linear" and not m > 0:
            raise ValueError(f"mu must be > 0 with time_shift='linear' (t -> mu / (mu + 1/t - 1)), got {m}")
    hi = check_float(t_max, "t_max", positive=True)
    if hi > 1:
        raise ValueError(f"t_max must be in (0, 1] (1 is pure noise), got {hi}")
    nt = check_int(num_train_timesteps, "num_train_timesteps", minimum=1)
    if t_min is None:
        lo = 1.0 / nt if m is not None else float(_static_shift(torch.tensor(1.0 / nt, dtype=torch.float64), s))
    else:
        lo = check_float(t_min, "t_min", positive=True)
    if n > 1 and not lo < hi:
        raise ValueError(f"t_min must be < t_max, got t_min={lo}, t_max={hi}")
    i = torch.arange(n, dtype=torch.float64)
    t = hi + (i / (n - 1) if n > 1 else i) * (lo - hi)
    t = _static_shift(t, s) if m is None else _dynamic_shift(t, m, time_shift)
    if shift_terminal is not None:
        st = check_float(shift_terminal, "shift_terminal", positive=True)
        if st >= 1:
            raise ValueError(f"shift_terminal must be in (0, 1), got {st}")
        if not float(t[-1]) < 1:
            raise ValueError(
                f"shift_terminal stretches the schedule by its last t, which is 1 here (num_steps={n}); use at "
                "least 2 steps"
            )
        t = 1 - (1 - t) / ((1 - t[-1]) / (1 - st))
    t = _respace(t, n, spacing)
    what = f"flow_sigmas(num_steps={n}, shift={s}, mu={m}, spacing={spacing!r})"
    return _t_to_sigmas(t, what)


def _respace(t: Tensor, n: int, spacing: Spacing) -> Tensor:
    """diffusers' _convert_to_karras / _exponential / _beta applied to flow times (between t[0] and t[-1])."""
    if spacing == "linear":
        return t
    t_hi, t_lo = float(t[0]), float(t[-1])
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    if spacing == "karras":
        rho = 7.0
        out = torch.pow(t_hi ** (1 / rho) + ramp * (t_lo ** (1 / rho) - t_hi ** (1 / rho)), rho)
    elif spacing == "exponential":
        out = torch.exp(math.log(t_hi) + ramp * (math.log(t_lo) - math.log(t_hi)))
    else:
        out = _beta_spacing(ramp, t_hi, t_lo)
    # Pin the ends (the round trips may be off by an ulp; t = 1 must stay exactly pure noise).
    out[0] = t_hi
    if n > 1:
        out[-1] = t_lo
    return out


def _beta_spacing(ramp: Tensor, t_hi: float, t_lo: float) -> Tensor:
    try:
        import scipy.stats
    except ImportError:
        raise ImportError(
            "spacing='beta' needs scipy (pip install scipy), as diffusers' use_beta_sigmas does"
        ) from None
    q = scipy.stats.beta.ppf((1 - ramp).numpy(), 0.6, 0.6)
    return t_lo + torch.as_tensor(q, dtype=torch.float64) * (t_hi - t_lo)


def flow_initial_x(latents: Tensor, sigmas: Tensor) -> Tensor:
    """The sampler's starting state for unit ``latents`` on a flow schedule: the state of diffusers' loop.

    diffusers starts flow models at x_t = latents whatever its first t: in EDM units x = latents * (1 + sigma_0),
    and latents itself when sigma_0 = inf (the library's convention for pure noise).
    """
    if not isinstance(latents, Tensor) or not latents.is_floating_point():
        raise TypeError(f"latents must be a floating-point tensor, got {type(latents).__name__}")
    if not isinstance(sigmas, Tensor) or sigmas.ndim != 1 or sigmas.numel() < 1:
        raise TypeError("sigmas must be a 1-D tensor of noise levels (for example flow_sigmas(...))")
    s0 = float(sigmas[0])
    if math.isnan(s0) or s0 <= 0:
        raise ValueError(f"sigmas[0] must be > 0 (or inf), got {s0}")
    return latents.clone() if math.isinf(s0) else latents * (1 + s0)


# ---- diffusers schedulers --------------------------------------------------------------------------------

_FLOW_NATIVE = ("FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler")
_FLOW_UNSUPPORTED = {
    "FlowMatchLCMScheduler": "a consistency-distilled flow model",
    "FlowMapEulerDiscreteScheduler": "a flow-map model, conditioned on two times",
    "LTXEulerAncestralRFScheduler": "an ancestral sampler with its own noise injection",
}
_FLOW_OPTION = ("DPMSolverMultistepScheduler", "UniPCMultistepScheduler")


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
        found = next((n for n in names if n in _FLOW_NATIVE or n in _FLOW_OPTION), None)
        c = getattr(scheduler_or_config, "config", None)
        if found is None or not isinstance(c, Mapping):
            return None
        name, cfg = found, c
    if name in _FLOW_NATIVE:
        return name, False
    if name in _FLOW_OPTION and (cfg.get("use_flow_sigmas") or cfg.get("prediction_type") == "flow_prediction"):
        return name, False
    return None


def flow_scheduler_name(scheduler_or_config: object) -> str | None:
    """The diffusers class name if ``scheduler_or_config`` schedules a flow model that this module handles
    (FlowMatchEuler/Heun, or DPM-Solver/UniPC with ``use_flow_sigmas`` or ``prediction_type="flow_prediction"``;
    a config without ``_class_name`` is recognised by its keys), else None. Private to the package (used by
    :func:`~edm_samplers.from_diffusers`)."""
    found = _flow_class(scheduler_or_config)
    return None if found is None else found[0]


def _scheduler_and_config(
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
    if name in _FLOW_OPTION:
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
    sched, cfg, name = _scheduler_and_config(scheduler_or_config, "scheduler_or_config", need_class=True)
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
    return _t_to_sigmas(t[:-1], f"{name}.set_timesteps({n})")


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
    _, cfg, name = _scheduler_and_config(scheduler_or_config, "scheduler_or_config", need_class=False)
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
        timestep="floor" if name in _FLOW_OPTION else "continuous",
        num_train_timesteps=nt,
        learned_variance=learned_variance,
        net_dtype=net_dtype,
        call=call,
    )
