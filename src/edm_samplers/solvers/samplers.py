"""The public single-step samplers: EDM's Euler, Heun, churn and generalized samplers, DPM-Solver-2 and
Euler ancestral.

All samplers share one signature and one contract::

    <name>_sample(denoiser, x, sigmas, *, <method knobs>, cond=None, noise=None, callback=None,
                  dtype=None, progress=False, check_finite=True) -> Tensor

- ``x`` is already at noise level ``sigmas[0]`` (use :func:`~edm_samplers.initial_x` to scale unit latents);
  ``sigmas[0]`` may be inf (pure noise), and then ``x`` is the unit-variance noise itself and the first step
  is x_1 = D(n; inf) + sigma_1 n (:func:`.steps.inf_step`), the limit of every sampler here as sigma_0 -> inf
  where it has one that evaluations of D give (docs/api.md, "Starting at sigma = inf").
- ``sigmas`` is any non-increasing schedule; the step to a final 0 is always an Euler step (it returns D
  exactly).
- The state integrates in x's dtype promoted to at least float32 (``dtype=`` overrides; float64 reproduces
  the paper's reference numerics). The result is returned in that dtype.
- Randomness only through ``noise`` (a NoiseSource, a ``torch.Generator`` or None for torch's global RNG).
  Deterministic samplers draw nothing. Stochastic ones read draw i of a ``CounterNoise`` (the default) at step i,
  only on the steps that add noise; a stream (a generator, ``PerSampleNoise``) is drawn once per step, whatever
  the knobs, unless they add no noise at all (then nothing is drawn).
- Gradient mode is the caller's: nothing here disables autograd.

Each function is its registry entry's signature and description; the shared argument docs and the run
itself come from :mod:`.api` and :mod:`.runtime`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from torch import Tensor

from .._types import Denoiser
from .api import RunOptions, Sigmas, Unpack, call, public

__all__ = [
    "dpm2_sample",
    "euler_ancestral_sample",
    "euler_sample",
    "generalized_sample",
    "heun_sample",
    "stochastic_sample",
]

Step = Literal["heun", "euler"]
RoundSigma = Callable[[Tensor], Tensor] | None


@public("euler")
def euler_sample(denoiser: Denoiser, x: Tensor, sigmas: Sigmas, **run: Unpack[RunOptions]) -> Tensor:
    """Deterministic Euler sampler of the probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma.

    Order 1, 1 NFE per step (N NFE). Each step is x_next = D + (sigma_next / sigma)(x - D), which returns D
    exactly on the step to sigma = 0.
    """
    return call("euler", denoiser, x, sigmas, run)


@public("heun")
def heun_sample(denoiser: Denoiser, x: Tensor, sigmas: Sigmas, **run: Unpack[RunOptions]) -> Tensor:
    """EDM Algorithm 1: Heun's 2nd-order method (trapezoidal rule), Euler on the last step to sigma = 0.

    Order 2; 2 NFE per step except the final step to 0 (1 NFE): 2N - 1 NFE, e.g. 35 for N = 18. From
    ``sigmas[0] = inf`` the first step is the Euler/DDIM limit x_1 = D(n; inf) + sigma_1 n (1 NFE: the trapezoid's
    correction grows like sigma_0 (D_0 - D_1) / (2 sigma_1), it has no limit), so 2N - 2 NFE.
    """
    return call("heun", denoiser, x, sigmas, run)


@public("stochastic")
def stochastic_sample(denoiser: Denoiser, x: Tensor, sigmas: Sigmas, *, s_churn: float = 0.0, s_tmin: float = 0.0,
                      s_tmax: float = float("inf"), s_noise: float = 1.0, solver: Step = "heun",
                      round_sigma: RoundSigma = None, **run: Unpack[RunOptions]) -> Tensor:  # fmt: skip
    """EDM Algorithm 2: the stochastic "churn" sampler.

    At each step i, gamma_i = min(s_churn / N, sqrt(2) - 1) if s_tmin <= sigma_i <= s_tmax else 0; the
    state is raised to sigma_hat = sigma_i (1 + gamma_i) by adding fresh noise
    x_hat = x + s_noise sqrt(sigma_hat^2 - sigma_i^2) eps_i, then one ODE step (Heun, or Euler with
    ``solver="euler"``) goes from sigma_hat to sigma_{i+1}; the step to 0 is Euler. Order 2 (Heun: 2N - 1
    NFE) or 1 (Euler: N NFE). Only steps with gamma_i > 0 read their draw i of a ``CounterNoise`` (the
    default); a stream is drawn on every step, so that it does not depend on the churn settings. ``s_churn = 0``
    draws nothing and returns bit for bit what :func:`heun_sample` / :func:`euler_sample` return.
    ``round_sigma`` (e.g. a preconditioner's) maps sigma_hat onto the levels a discrete model supports.
    From ``sigmas[0] = inf`` (x = unit noise n) churn tends to re-mixing the noise,
    n_hat = (n + s_noise sqrt((1 + gamma_0)^2 - 1) eps_0) / (1 + gamma_0), and the step to
    x_1 = D(n_hat; inf) + sigma_1 n_hat (1 NFE; Heun has no limit there); inf is never passed to ``round_sigma``.
    """
    return call("stochastic", denoiser, x, sigmas, run, s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax,
                s_noise=s_noise, solver=solver, round_sigma=round_sigma)  # fmt: skip


@public("generalized")
def generalized_sample(denoiser: Denoiser, x: Tensor, sigmas: Sigmas, *,
                       schedule: Literal["edm", "linear", "vp", "ve"] = "edm", scaling: Literal["none", "vp"] = "none",
                       solver: Step = "heun", alpha: float = 1.0, s_churn: float = 0.0, s_tmin: float = 0.0,
                       s_tmax: float = float("inf"), s_noise: float = 1.0, round_sigma: RoundSigma = None,
                       beta_d: float = 19.9, beta_min: float = 0.1, **run: Unpack[RunOptions]) -> Tensor:  # fmt: skip
    """EDM's generalized sampler: Algorithm 1 for any sigma(t), s(t), 1st/2nd-order rule, optional churn.

    Order 1 (``solver="euler"``, N NFE) or 2 (``"heun"``: 2 NFE per step, Euler on the step to 0, 2N - 1
    NFE). With ``schedule="edm"``, ``scaling="none"``, ``alpha=1`` it computes what :func:`heun_sample` /
    :func:`euler_sample` (and, with churn, :func:`stochastic_sample`) compute, up to round-off. ``x`` and the
    result are unscaled (x = y + sigmas[0] n), like every sampler of the library; so are the states the
    callback receives. A stream (``PerSampleNoise``, a generator) is drawn once per step whatever the churn
    range (like the paper's code), so sweeping it never shifts the stream; a ``CounterNoise`` (the default) is
    read only on churning steps, draw i at step i; zero churn draws nothing. Pass ``noise=`` to keep torch's
    global RNG untouched. See :mod:`edm_samplers.solvers.generalized` for sigma(t), s(t) and the alpha rule.
    From ``sigmas[0] = inf`` the first step is x_1 = D(n_hat; inf) + sigma_1 n_hat as in :func:`stochastic_sample`
    for every sigma(t), s(t) (an Euler step in t from t = inf diverges or ignores D; see the module).
    """
    return call("generalized", denoiser, x, sigmas, run, schedule=schedule, scaling=scaling, solver=solver,
                alpha=alpha, s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise,
                round_sigma=round_sigma, beta_d=beta_d, beta_min=beta_min)  # fmt: skip


@public("dpm2")
def dpm2_sample(denoiser: Denoiser, x: Tensor, sigmas: Sigmas, *, form: Literal["noise", "data"] = "noise",
                **run: Unpack[RunOptions]) -> Tensor:  # fmt: skip
    """DPM-Solver-2 (Lu et al. 2022, Algorithm 1 with r = 1/2): single-step midpoint in lambda, 2 NFE per step.

    sigma_m = sqrt(sigma_i sigma_{i+1}); u = D_i + (sigma_m/sigma_i)(x_i - D_i) (DPM-Solver-1 to sigma_m);
    ``form="noise"`` (DPM-Solver-2, = k-diffusion's ``sample_dpm_2``): x_{i+1} = x_i + (sigma_{i+1} - sigma_i)
    (u - D(u; sigma_m)) / sigma_m; ``form="data"`` (DPM-Solver++(2S)): x_{i+1} = D_m + (sigma_{i+1}/sigma_i)
    (x_i - D_m). Order 2; the step to a final 0 is Euler (1 NFE, returns D exactly): 2N - 1 NFE. From
    ``sigmas[0] = inf`` the first step is x_1 = D(n; inf) + sigma_1 n (1 NFE): the data form's limit; the noise
    form's limit adds a derivative of D at infinity that no evaluation gives (:mod:`.dpm2`).
    """
    return call("dpm2", denoiser, x, sigmas, run, form=form)


@public("euler_ancestral")
def euler_ancestral_sample(denoiser: Denoiser, x: Tensor, sigmas: Sigmas, *, eta: float = 1.0, s_noise: float = 1.0,
                           **run: Unpack[RunOptions]) -> Tensor:  # fmt: skip
    """Euler ancestral sampling (Ho et al. 2020 in EDM form; k-diffusion's ``sample_euler_ancestral``).

    sigma_up = min(sigma_{i+1}, eta sqrt(sigma_{i+1}^2 (sigma_i^2 - sigma_{i+1}^2) / sigma_i^2)),
    sigma_down = sqrt(sigma_{i+1}^2 - sigma_up^2); an Euler step to sigma_down, then
    x_{i+1} = x' + s_noise sigma_up eps_i. Order 1 (strong order 1/2 for eta > 0); 1 NFE per step; draw i at step i
    (a stream: every step); the step to a final 0 has sigma_up = 0, draws no ``CounterNoise`` and returns D
    exactly. ``eta = 0`` is Euler.
    From ``sigmas[0] = inf`` (x = unit noise n): x_1 = D(n; inf) + sigma_1 sqrt(1 - eta^2) n + s_noise eta sigma_1
    eps_0 (eta <= 1), the limit of the step.
    """
    return call("euler_ancestral", denoiser, x, sigmas, run, eta=eta, s_noise=s_noise)
