"""Flow-matching schedules in EDM units: FlowMatchEulerDiscreteScheduler's levels, its shift, and the start state.

Flow time t maps to EDM's noise level by sigma = t / (1 - t) (t = 1, pure noise, is sigma = inf); see
:mod:`edm_samplers.flow` for the coordinates. Public names are re-exported from :mod:`edm_samplers.flow`;
:func:`t_to_sigmas` is shared with :mod:`._flow_diffusers`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from ._validate import check_float, check_int

__all__ = ["Spacing", "TimeShift", "flow_initial_x", "flow_shift_mu", "flow_sigmas", "t_to_sigmas"]

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


def t_to_sigmas(t: Tensor, what: str) -> Tensor:
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
    return t_to_sigmas(t, what)


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
