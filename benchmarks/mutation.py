"""Question: does the test suite fail when a formula of the library is plausibly wrong?

A reproducible mutation run over the formula modules. Each mutant below names a file under
``src/edm_samplers/``, an exact snippet of its source, the replacement (a swapped coefficient, an ignored
argument, an off-by-one index, a moved clamp, a sign flip, a wrong exponent), the test files that should
catch it, and one line saying what it breaks. For every mutant the script copies ``src/``, ``tests/`` and
``pyproject.toml`` to a temporary directory (the working tree is never modified), applies the replacement
there, and runs ``python -m pytest -x -q`` on the named test files with that copy first on ``PYTHONPATH``.

Outcomes: ``killed`` (the tests failed), ``survived`` (they passed: a missing test), ``timeout`` (counted
as killed: the mutant made the tests hang), ``stale`` (the original snippet is no longer in the file, or
occurs a different number of times: the mutant must be updated after a refactor, never silently
dropped), ``equivalent`` (listed with a reason; not run: the replacement computes the same values;
``--check-equivalent`` runs them, and one that fails its tests is reported ``refuted``).
Score = killed / (mutants run), stale and equivalent mutants excluded from the denominator but reported.

Run (from the repository root; about 10-20 minutes on two shared CPU cores):

    OMP_NUM_THREADS=1 python benchmarks/mutation.py                 # all mutants
    OMP_NUM_THREADS=1 python benchmarks/mutation.py -k churn -k sde  # names containing any of these
    python benchmarks/mutation.py --list                            # the table of mutants, nothing run

Exit status: 0 when every runnable mutant is killed and none is stale or refuted, 1 otherwise. Adding a mutant: see
docs/testing.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = "src/edm_samplers"


@dataclass(frozen=True)
class Mutant:
    """One plausible wrong formula.

    Attributes:
        name: short unique id (used by ``-k``).
        file: path relative to ``src/edm_samplers/``.
        original: exact source snippet; must occur exactly ``count`` times in the file.
        replacement: what replaces occurrence ``occurrence`` (1-based) of ``original``.
        tests: test files (relative to the repository root) run with ``pytest -x``; cheap, focused files first.
        description: what the mutant breaks, in one line.
        equivalent: if not empty, the reason the mutant computes the same values (it is then not run).
        count: how many times ``original`` occurs in the file (1 unless the snippet repeats).
        occurrence: which occurrence is replaced.
    """

    name: str
    file: str
    original: str
    replacement: str
    tests: tuple[str, ...]
    description: str
    equivalent: str = ""
    count: int = 1
    occurrence: int = 1


FORMULAS = "tests/test_formulas.py"
TRANSCRIPTIONS = "tests/test_transcriptions.py"
SCHED = (FORMULAS, "tests/test_schedules.py")
PRECOND = (FORMULAS, "tests/test_precond.py")
LOSS = (FORMULAS, "tests/test_loss.py")
ANALYTIC = (FORMULAS, TRANSCRIPTIONS, "tests/test_reference_solver.py")
CORE = (FORMULAS, TRANSCRIPTIONS, "tests/test_reference.py", "tests/test_samplers.py")
MULTI = (TRANSCRIPTIONS, "tests/test_multistep.py")
ORDER_RULE = ("tests/test_order_rule.py",)
GENERAL = (FORMULAS, TRANSCRIPTIONS, "tests/test_generalized.py")
NOISE = ("tests/test_noise.py", FORMULAS, TRANSCRIPTIONS, "tests/test_samplers.py")
FLOW = ("tests/test_flow.py",)
INF = ("tests/test_infinite_sigma.py",)
FAMILIES = ("tests/test_diffusers_families.py", "tests/test_diffusers_scheduler_families.py")
CFGPP = ("tests/test_cfgpp.py",)

# fmt: off
MUTANTS: tuple[Mutant, ...] = (
    # ---- schedules.py -----------------------------------------------------------------------------------
    Mutant("karras_ignores_rho", "schedules.py",
           'r = check_float(rho, "rho", positive=True)', 'r = 7.0 + 0 * check_float(rho, "rho", positive=True)',
           SCHED, "karras_sigmas always uses rho = 7"),
    Mutant("karras_swapped_ends", "schedules.py",
           "log_ratio = math.log(lo) - math.log(hi)", "log_ratio = math.log(hi) - math.log(lo)",
           SCHED, "Eq. 5 interpolates from sigma_min towards sigma_max"),
    Mutant("fractions_off_by_one", "schedules.py",
           "return i / (num_steps - 1) if num_steps > 1 else i", "return i / num_steps if num_steps > 1 else i",
           SCHED, "i / N instead of i / (N - 1) in every builder"),
    Mutant("loglinear_linear", "schedules.py",
           "sig = torch.exp(math.log(hi) + f * (math.log(lo) - math.log(hi)))", "sig = hi + f * (lo - hi)",
           SCHED, "log-linear schedule linear in sigma"),
    Mutant("vp_sigma_no_half", "schedules.py",
           "z = 0.5 * bd * tt**2 + bm * tt", "z = bd * tt**2 + bm * tt",
           SCHED, "VP sigma(t) without the 1/2 on beta_d t^2"),
    Mutant("vp_sigma_inv_log_sigma", "schedules.py",
           "log_var = torch.log1p(s * s)", "log_var = torch.log1p(s)",
           SCHED, "VP t(sigma) with ln(1 + sigma) for ln(1 + sigma^2)"),
    Mutant("vp_sigmas_ignore_eps_s", "schedules.py",
           "t = 1 + _fractions(n) * (es - 1)", "t = 1 + _fractions(n) * (1e-3 - 1)",
           SCHED, "vp_sigmas ignores eps_s"),
    Mutant("iddpm_alphabar_no_square", "schedules.py",
           "abar = torch.sin(0.5 * math.pi * j / (m * (c2 + 1))) ** 2",
           "abar = torch.sin(0.5 * math.pi * j / (m * (c2 + 1)))",
           SCHED, "iDDPM alphabar_j = sin (not sin^2)"),
    Mutant("iddpm_index_truncates", "schedules.py",
           "torch.floor((inside.numel() - 1) * _fractions(n) + 0.5)",
           "torch.floor((inside.numel() - 1) * _fractions(n))",
           SCHED, "iDDPM index truncated instead of rounded (no + 1/2)"),
    # ---- precond.py -------------------------------------------------------------------------------------
    Mutant("edm_c_skip_sd_not_squared", "scalings.py", "c_skip=r * r,", "c_skip=r * r / sd,",
           PRECOND, "c_skip = sigma_data / (sigma^2 + sigma_data^2)"),
    Mutant("edm_c_out_no_sd", "scalings.py", "c_out=s * r,", "c_out=s * r / sd,",
           PRECOND, "c_out without the sigma_data factor"),
    Mutant("edm_c_noise_half", "scalings.py", "c_noise=torch.log(s) / 4", "c_noise=torch.log(s) / 2",
           PRECOND, "c_noise = ln(sigma) / 2"),
    Mutant("edm_precond_ignores_sigma_data", "precond.py",
           "return self._signed(edm_scalings(sigma, self.sigma_data))", "return self._signed(edm_scalings(sigma))",
           PRECOND, "EDMPrecond always uses sigma_data = 0.5"),
    Mutant("edm_precond_forward_ignores_sigma_data", "precond.py",
           "return self._signed(_edm(s, self.sigma_data))", "return self._signed(_edm(s, 0.5))",
           PRECOND, "EDMPrecond's forward pass uses sigma_data = 0.5"),
    Mutant("vp_c_noise_m", "scalings.py",
           "c_noise=(m - 1) * vp_sigma_inv(s, bd, bm)", "c_noise=m * vp_sigma_inv(s, bd, bm)",
           PRECOND, "VP c_noise = M t instead of (M - 1) t"),
    Mutant("ve_c_noise_no_half", "scalings.py", "c_noise=torch.log(0.5 * s)", "c_noise=torch.log(s)",
           PRECOND, "VE c_noise = ln(sigma) instead of ln(sigma / 2)"),
    Mutant("iddpm_index_includes_zero_level", "scalings.py",
           "trained = u[:-1].to(", "trained = u.to(",
           PRECOND, "iDDPM nearest level searched including u_M = 0"),
    Mutant("iddpm_c_noise_m", "scalings.py", "c_noise=(m - 1 - j).to(s.dtype)", "c_noise=(m - j).to(s.dtype)",
           PRECOND, "iDDPM c_noise = M - j instead of M - 1 - j"),
    Mutant("precond_skip_on_scaled_input", "precond.py",
           "return _append_dims(sc.c_skip, x.ndim) * xc +", "return _append_dims(sc.c_skip, x.ndim) * x_in +",
           PRECOND, "skip connection applied to c_in x instead of x"),
    # ---- training/loss.py -------------------------------------------------------------------------------
    Mutant("lognormal_variance_for_std", "training/_sigmas.py",
           "return (z * p_std + p_mean).exp()", "return (z * p_std**2 + p_mean).exp()",
           LOSS, "ln sigma drawn with P_std^2 as its standard deviation"),
    Mutant("loguniform_no_offset", "training/_sigmas.py",
           "(math.log(lo) + (math.log(hi) - math.log(lo)) * u).exp()", "(math.log(lo) + math.log(hi) * u).exp()",
           LOSS, "ln sigma ~ U(ln lo, ln lo + ln hi)"),
    Mutant("vp_training_ignores_eps_t", "training/_sigmas.py",
           "vp_sigma(eps_t + (1 - eps_t) * u,", "vp_sigma((1 - eps_t) * u,",
           LOSS, "VP training t ~ U(0, 1 - eps_t)"),
    Mutant("edm_weight_not_squared", "training/_sigmas.py",
           "return torch.reciprocal(s).square() + inv_sd2",
           "return torch.reciprocal(s) + inv_sd2",
           LOSS, "lambda(sigma) without the square in the denominator"),
    Mutant("edm_loss_ignores_sigma_data", "training/loss.py",
           "return edm_weight(sigma, self.sigma_data)", "return edm_weight(sigma)",
           LOSS, "EDMLoss weights with sigma_data = 0.5 whatever it was given"),
    Mutant("loss_noise_variance_scale", "training/loss.py",
           "* _bcast(sigma, y.ndim)", "* _bcast(sigma**2, y.ndim)",
           LOSS, "training noise of std sigma^2"),
    Mutant("loss_target_unaugmented", "training/loss.py",
           "return _bcast(weight, y.ndim) * (denoised - y) ** 2, sigma",
           "return _bcast(weight, y.ndim) * (denoised - images) ** 2, sigma",
           LOSS, "error against the un-augmented images when an augment pipe is used"),
    Mutant("uncertainty_sign", "training/loss.py", "loss = loss / u.exp() + u", "loss = loss / u.exp() - u",
           LOSS, "EDM2 uncertainty term with the wrong sign"),
    # ---- evaluation/analytic.py -------------------------------------------------------------------------
    Mutant("mixture_no_logvar", "evaluation/analytic.py",
           "logits = torch.log(w)[None, :] - 0.5 * d2 / var - 0.5 * self.dim * torch.log(var)",
           "logits = torch.log(w)[None, :] - 0.5 * d2 / var",
           ANALYTIC, "mixture responsibilities without the -d/2 log(var_k) term"),
    Mutant("mixture_shrink_std", "evaluation/analytic.py",
           "shrink = st[None, :] ** 2 / var", "shrink = st[None, :] / var",
           ANALYTIC, "posterior shrinkage s_k / (s_k^2 + sigma^2) instead of s_k^2 / (...)"),
    Mutant("mixture_weights_not_logged", "evaluation/analytic.py",
           "logits = torch.log(w)[None, :] -", "logits = w[None, :] -",
           ANALYTIC, "mixture weights added to the logits without the log"),
    Mutant("gaussian_ode_no_sqrt", "evaluation/analytic.py",
           "factor = ((s**2 + sigma**2) / (s**2 + sigma0**2)) ** 0.5",
           "factor = (s**2 + sigma**2) / (s**2 + sigma0**2)",
           ANALYTIC, "closed-form Gaussian ODE solution without the square root"),
    Mutant("mixture_sample_variance", "evaluation/analytic.py",
           "mu + _bcast(self.stds.to(torch.float64)[comp], eps.ndim) * eps",
           "mu + _bcast(self.stds.to(torch.float64)[comp] ** 2, eps.ndim) * eps",
           ANALYTIC, "GaussianMixture.sample scales the noise by the variance"),
    # ---- noise.py ---------------------------------------------------------------------------------------
    Mutant("per_sample_rows_reversed", "noise.py",
           "for row, g in zip(out, gens, strict=True):", "for row, g in zip(out, gens[::-1], strict=True):",
           NOISE, "PerSampleNoise row k drawn from the last seed's generator"),
    Mutant("draws_in_float64", "noise.py", "_DRAW_DTYPE = torch.float32", "_DRAW_DTYPE = torch.float64",
           NOISE, "float64 sampling sees different noise values than float32"),
    Mutant("precomputed_does_not_advance", "noise.py",
           "self.index += 1\n        return d.to(", "self.index += 0\n        return d.to(",
           NOISE, "PrecomputedNoise returns its first draw forever"),
    Mutant("global_noise_ignores_generator", "noise.py",
           "torch.randn(shape, generator=self.generator,", "torch.randn(shape, generator=None,",
           NOISE, "GlobalNoise draws from torch's global RNG"),
    # ---- solvers/steps.py -------------------------------------------------------------------------------
    Mutant("churn_gamma_n_plus_1", "solvers/steps.py",
           "g = min(s_churn / n, math.sqrt(2.0) - 1.0)", "g = min(s_churn / (n + 1), math.sqrt(2.0) - 1.0)",
           CORE, "gamma = S_churn / (N + 1)"),
    Mutant("churn_clamp_moved", "solvers/steps.py",
           "g = min(s_churn / n, math.sqrt(2.0) - 1.0)", "g = min(s_churn / n, math.sqrt(2.0))",
           CORE, "gamma clamped at sqrt(2) instead of sqrt(2) - 1"),
    Mutant("churn_tmin_exclusive", "solvers/steps.py",
           "inside = (s >= s_tmin) & (s <= s_tmax)", "inside = (s > s_tmin) & (s <= s_tmax)",
           CORE, "S_tmin bound exclusive"),
    Mutant("churn_tmax_exclusive", "solvers/steps.py",
           "inside = (s >= s_tmin) & (s <= s_tmax)", "inside = (s >= s_tmin) & (s < s_tmax)",
           CORE, "S_tmax bound exclusive"),
    Mutant("churn_sigma_hat_additive", "solvers/steps.py", "hat = s + gammas * s", "hat = s + gammas",
           CORE, "sigma_hat = sigma + gamma instead of sigma (1 + gamma)"),
    Mutant("churn_noise_no_sqrt", "solvers/steps.py",
           "noise_scale = torch.sqrt((sigma_hat**2 - sigma**2).clamp_min(0)) * s_noise",
           "noise_scale = (sigma_hat - sigma).clamp_min(0) * s_noise",
           CORE, "churn noise std sigma_hat - sigma instead of sqrt(sigma_hat^2 - sigma^2)"),
    Mutant("churn_ignores_s_noise", "solvers/steps.py",
           "noise_scale = torch.sqrt((sigma_hat**2 - sigma**2).clamp_min(0)) * s_noise",
           "noise_scale = torch.sqrt((sigma_hat**2 - sigma**2).clamp_min(0))",
           CORE, "S_noise ignored"),
    Mutant("heun_corrector_full_weight", "solvers/steps.py",
           "h / (2 * safe_next)", "h / safe_next",
           CORE, "Heun's corrector weight h / sigma_next instead of h / (2 sigma_next)"),
    Mutant("heun_a_full_weight", "solvers/steps.py",
           "heun_a=scal(h / (2 * sigma_hat))", "heun_a=scal(h / sigma_hat)",
           CORE, "Heun's first slope with weight 1 instead of 1/2"),
    Mutant("euler_ratio_before_churn", "solvers/steps.py",
           "ratio=scal(sigma_next / sigma_hat)", "ratio=scal(sigma_next / sigma)",
           CORE, "Euler step from sigma instead of sigma_hat after churn"),
    Mutant("heun_predictor_at_sigma_hat", "solvers/steps.py",
           "diff_pred = x_pred - denoiser(x_pred, c.sigma_next, **cond)",
           "diff_pred = x_pred - denoiser(x_pred, c.sigma_hat, **cond)",
           CORE, "Heun's second evaluation at sigma_hat (functional form)"),
    Mutant("heun_buffered_predictor_at_sigma_hat", "solvers/steps.py",
           "denoised_pred = denoiser(pred, c.sigma_next, **cond)",
           "denoised_pred = denoiser(pred, c.sigma_hat, **cond)",
           CORE, "Heun's second evaluation at sigma_hat (buffered form)"),
    Mutant("heun_safe_divisor", "solvers/steps.py",
           "safe_next = torch.where(sigma_next > 0, sigma_next, torch.ones_like(sigma_next))",
           "safe_next = torch.where(sigma_next > 0, sigma_next, torch.full_like(sigma_next, 2.0))",
           CORE, "another placeholder divisor where sigma_next = 0",
           equivalent="the placeholder only divides where heun_b is then replaced by 0 (the step to 0 is Euler)"),
    # ---- solvers/edm.py, generate.py, registry.py -------------------------------------------------------
    Mutant("heun_on_last_step", "solvers/edm.py",
           'if self.method == "heun" and host[i + 1] > 0:', 'if self.method == "heun" and host[i] > 0:',
           CORE, "Heun correction also on the step to sigma = 0"),
    Mutant("initial_x_wrong_level", "solvers/generate.py",
           "first = float(s[0])", "first = float(s[1])",
           CORE, "initial_x scales by sigma_1"),
    Mutant("generate_unscaled_latents", "solvers/generate.py",
           "x = latents if math.isinf(float(s[0])) else latents * s[0].to(dtype)", "x = latents",
           CORE, "generate() does not scale the latents by sigma_0"),
    Mutant("count_nfe_last_step", "solvers/registry.py",
           "return 2 * n - int(end_zero)", "return 2 * n",
           CORE, "count_nfe counts a Heun correction on the step to 0"),
    # ---- solvers/coefficients.py ------------------------------------------------------------------------
    Mutant("exp_weights_no_rate", "solvers/coefficients.py",
           "weight = rate * np.exp(-rate * (h - t))", "weight = np.exp(-rate * (h - t))",
           MULTI, "SDE drift weights without the factor (1 + eta)"),
    Mutant("logsigma_weights_sign", "solvers/coefficients.py",
           "(w * np.exp(-t)))", "(w * np.exp(t)))",
           MULTI, "DEIS weights with e^{+u} (sigma grows along the step)"),
    Mutant("lms_weights_reversed", "solvers/coefficients.py",
           "t, w = _quad_nodes(0.0, sigma_next - sigma, 0.0)", "t, w = _quad_nodes(0.0, sigma - sigma_next, 0.0)",
           MULTI, "LMS integrates from sigma_i upwards"),
    Mutant("lagrange_denominator_sign", "solvers/coefficients.py",
           "out[j] *= (t - nodes[m]) / (nodes[j] - nodes[m])", "out[j] *= (t - nodes[m]) / (nodes[m] - nodes[j])",
           MULTI, "Lagrange basis with the denominator's sign flipped"),
    Mutant("ab4_swapped", "solvers/coefficients.py",
           "4: (55.0 / 24.0, -59.0 / 24.0, 37.0 / 24.0, -9.0 / 24.0)",
           "4: (55.0 / 24.0, -59.0 / 24.0, -9.0 / 24.0, 37.0 / 24.0)",
           MULTI, "AB4 weights of the two oldest outputs swapped (still sum to 1)"),
    Mutant("quadrature_too_coarse", "solvers/coefficients.py", "_GL_NODES = 16", "_GL_NODES = 3",
           MULTI, "3-node Gauss-Legendre: weights inexact for cubic x exponential"),
    Mutant("quadrature_finer_panels", "solvers/coefficients.py", "_PANEL = 2.0", "_PANEL = 1.0",
           MULTI, "twice as many Gauss-Legendre panels",
           equivalent="both panel lengths integrate the weights to ~1e-30 relative; results differ by round-off only"),
    # ---- solvers/plans.py, linear.py, dpm2.py --------------------------------------------------------------
    Mutant("sde_noise_std", "solvers/plans.py",
           "math.sqrt(-math.expm1(-2.0 * eta * h))", "math.sqrt(-math.expm1(-eta * h))",
           MULTI, "SDE noise std sigma' sqrt(1 - e^{-eta h}) instead of sqrt(1 - e^{-2 eta h})"),
    Mutant("sde_drift_half", "solvers/plans.py",
           "a[i] = s[i + 1] / s[i] * math.exp(-eta * h)", "a[i] = s[i + 1] / s[i] * math.exp(-eta * h / 2)",
           MULTI, "SDE state decay e^{-eta h / 2}"),
    Mutant("sde_b_without_eta", "solvers/plans.py",
           "big_b = -math.expm1(-rate * h)", "big_b = -math.expm1(-h)",
           MULTI, "2M-SDE data weight 1 - e^{-h} instead of 1 - e^{-(1 + eta) h}"),
    Mutant("ancestral_sigma_up", "solvers/plans.py",
           "up = min(sn, eta * sn * math.sqrt((1.0 - r) * (1.0 + r)))",
           "up = min(sn, eta * sn * math.sqrt((1.0 - r) * (1.0 + r)) / r)",
           MULTI, "ancestral sigma_up^2 divided by sigma_next^2 instead of sigma^2"),
    Mutant("ancestral_sigma_down_linear", "solvers/plans.py",
           "down = 0.0 if up >= sn else sn * math.sqrt(max((1.0 - eta * eta) + eta * eta * r * r, 0.0))",
           "down = sn - up",
           MULTI, "sigma_down = sigma_next - sigma_up"),
    Mutant("dpmpp_2m_r_inverted", "solvers/plans.py",
           "r = (lam[i] - lam[i - 1]) / h", "r = h / (lam[i] - lam[i - 1])",
           MULTI, "2M step ratio r = h / h_{i-1} instead of h_{i-1} / h"),
    Mutant("dpmpp_2m_full_difference", "solvers/plans.py",
           "b[i, 0] = big_b * (1.0 + 0.5 / r)", "b[i, 0] = big_b * (1.0 + 1.0 / r)",
           MULTI, "2M weight 1 + 1/r on D_i"),
    Mutant("deis_uses_lms_weights", "solvers/plans.py",
           "b[i, :k] = logsigma_lagrange_weights(lam[i - np.arange(k)] - lam[i], float(s[i]), lam[i + 1] - lam[i])",
           "b[i, :k] = sigma_lagrange_weights(s[i - np.arange(k)] - s[i], float(s[i]), float(s[i + 1]))",
           MULTI, "DEIS computes LMS (polynomial in sigma) weights"),
    Mutant("order_rule_final_off_by_one", "solvers/plans.py",
           'k = min(order, i + 1, order if rule == "full" else n - i)',
           'k = min(order, i + 1, order if rule == "full" else n - i - 1)',
           MULTI, "order_rule final/auto lowers one step too early (derivative family)"),
    Mutant("auto_low_sigma_threshold_moved", "solvers/plans.py",
           'if rule == "auto" and s[i + 1] <= LOW_ORDER_SIGMA:',
           'if rule == "auto" and s[i + 1] <= 0.5 * LOW_ORDER_SIGMA:',
           ORDER_RULE, "order_rule auto: order 1 only below sigma 0.05 instead of 0.1"),
    Mutant("auto_log_step_test_inverted", "solvers/plans.py",
           'elif rule == "auto" and h > MAX_LOG_STEP:', 'elif rule == "auto" and h <= MAX_LOG_STEP:',
           ORDER_RULE, "order_rule auto caps the order on the short log steps instead of the long ones"),
    Mutant("auto_3m_exact_order2_weights", "solvers/plans.py",
           'elif variant == "2m" or (k == 2 and (variant == "unipc" or rule == "auto")):',
           'elif variant == "2m" or (k == 2 and variant == "unipc"):',
           ORDER_RULE, "order_rule auto: 3M's order-2 steps use the exact weights, not the published 2M ones"),
    Mutant("unipc_c1_backward_euler", "solvers/plans.py",
           "wc = np.array([0.5 * big, 0.5 * big])", "wc = np.array([big, 0.0])",
           MULTI, "UniC-1 puts the whole weight on the new output"),
    Mutant("unipc_corrector_drops_column", "solvers/plans.py", "ncorr[i] = q + 1", "ncorr[i] = q",
           MULTI, "UniC ignores the oldest output"),
    Mutant("dpm2_arithmetic_midpoint", "solvers/dpm2.py",
           "mid = np.sqrt(g[:-1] * g[1:])", "mid = 0.5 * (g[:-1] + g[1:])",
           MULTI, "DPM-Solver-2 midpoint in sigma instead of lambda (still order 2)"),
    Mutant("noise_scale_of_previous_step", "solvers/linear.py",
           "x_next.addcmul_(eps, self.nz[i])", "x_next.addcmul_(eps, self.nz[i - 1])",
           MULTI, "step i adds noise with step i-1's scale"),
    # ---- solvers/generalized.py -------------------------------------------------------------------------
    Mutant("vp_sigma_deriv_no_half", "solvers/generalized.py",
           "return 0.5 * (beta_min + beta_d * t) * (sig + 1 / sig)", "return (beta_min + beta_d * t) * (sig + 1 / sig)",
           GENERAL, "VP sigma'(t) without the 1/2"),
    Mutant("vp_scaling_ratio_power", "solvers/generalized.py",
           "-safe_sig * ds * sc**2", "-safe_sig * ds * sc",
           GENERAL, "s'/s = -sigma sigma' s instead of -sigma sigma' s^2"),
    Mutant("alpha_weight", "solvers/generalized.py",
           "ones * (1 - 1 / (2 * alpha))", "ones * (1 - 1 / alpha)",
           GENERAL, "2nd-order rule weights (1 - 1/alpha) d"),
    Mutant("alpha_eval_level_ignored", "solvers/generalized.py",
           "sig_prime = sig_next if alpha == 1.0 else coords.sigma(t_prime)", "sig_prime = sig_next",
           GENERAL, "second slope evaluated at sigma_next whatever alpha"),
    Mutant("churn_noise_unscaled", "solvers/generalized.py",
           "noise_scale = s_hat * torch.sqrt(", "noise_scale = torch.sqrt(",
           GENERAL, "generalized churn noise without the s(t_hat) factor"),
    Mutant("churn_keep_inverted", "solvers/generalized.py",
           "s_hat / s_cur, noise_scale,", "s_cur / s_hat, noise_scale,",
           GENERAL, "generalized churn rescales x by s(t_i)/s(t_hat)"),
    # ---- issue 13: flow matching, infinite first level, diffusers families, CFG++ ------------------------
    Mutant("flow_input_unscaled", "flow.py",
           "return torch.where(torch.isinf(sigma), x, x / (1 + sigma))", "return x / (1 + sigma)",
           FLOW, "flow model input x_t = x / (1 + sigma) also at sigma = inf (0 instead of the noise)"),
    Mutant("flow_input_sigma_squared", "flow.py",
           "return torch.where(torch.isinf(sigma), x, x / (1 + sigma))",
           "return torch.where(torch.isinf(sigma), x, x / torch.sqrt(1 + sigma**2))",
           FLOW, "flow model input scaled like a VP model"),
    Mutant("flow_denoised_plus_v", "flow.py",
           "return self.model_input(x, sigma) - _t_of_sigma(sigma) * out",
           "return self.model_input(x, sigma) + _t_of_sigma(sigma) * out",
           FLOW, "D = x_t + t v (v = noise - x0: the sign of the velocity)"),
    Mutant("flow_t_is_sigma", "flow.py",
           "return torch.reciprocal(1 + torch.reciprocal(sigma))", "return sigma.clamp(max=1.0)",
           FLOW, "t = sigma instead of sigma / (1 + sigma)"),
    Mutant("flow_shift_inverted", "_flow_schedules.py",
           "return shift * t / (shift * t + (1 - t))", "return t / (t + shift * (1 - t))",
           FLOW, "static shift applied as 1/shift"),
    Mutant("flow_dynamic_shift_no_exp", "_flow_schedules.py",
           'a = math.exp(mu) if kind == "exponential" else mu', "a = mu",
           FLOW, "dynamic shifting with mu for exp(mu)"),
    Mutant("inf_step_drops_noise", "solvers/steps.py",
           "return torch.addcmul(denoised, x_hat, c.sigma_next), x_hat, denoised", "return denoised, x_hat, denoised",
           INF, "the first step from sigma = inf drops sigma_1 n (x_1 = D instead of D + sigma_1 n)"),
    Mutant("vp_inf_d_plus_v", "_adapter.py",
           "return torch.where(torch.isinf(sigma), -out, d)", "return torch.where(torch.isinf(sigma), out, d)",
           INF, "a v-prediction model at sigma = inf gives D = +v (x0 = -v there)"),
    Mutant("score_denoiser_sign", "diffusers_adapter.py",
           "return x + sigma**2 * out", "return x - sigma**2 * out",
           FAMILIES, "VE score model read as D = x - sigma^2 F (the score points towards the data)"),
    Mutant("edm_v_prediction_sign", "precond.py",
           'return sc._replace(c_out=-sc.c_out) if self.prediction == "v" else sc',
           'return sc',
           (*FAMILIES, *PRECOND), "EDMPrecond(prediction='v') without diffusers' sign flip of c_out"),
    Mutant("cfgpp_euler_renoise_guided", "solvers/cfgpp.py",
           "x_next = torch.sub(x, u).mul_(self.a[i]).addcmul_(d, self.c[i])",
           "x_next = torch.sub(x, d).mul_(self.a[i]).addcmul_(d, self.c[i])",
           CFGPP, "CFG++ renoises along the guided estimate (plain CFG) instead of the unconditional one"),
    Mutant("cfg_weight_swapped", "guidance.py",
           "return self._blend(torch.lerp(d_guide, d_main, self.w), d_main, inside)",
           "return self._blend(torch.lerp(d_main, d_guide, self.w), d_main, inside)",
           ("tests/test_guidance.py",), "guidance D_main + w (D_guide - D_main)"),
    # ---- issue 15 / 16: counter noise, analytical first step ---------------------------------------------
    Mutant("counter_gamma_constant", "_counter.py",
           "GAMMA = 0x9E3779B97F4A7C15", "GAMMA = 0x9E3779B97F4A7C17",
           ("tests/test_counter_noise.py",), "SplitMix64's increment off by 2 (other bits than the transcription)"),
    Mutant("afs_gaussian_inverted_shrink", "afs.py",
           "return mean + y * (var / (var + s2))", "return mean + y * (s2 / (var + s2))",
           ("tests/test_afs.py",), "Gaussian closed form shrinks with sigma^2 / (var + sigma^2)"),
    Mutant("afs_covariance_biased", "afs.py",
           "return mean, flat.T @ flat / (d.shape[0] - 1)", "return mean, flat.T @ flat / d.shape[0]",
           ("tests/test_afs.py", "tests/test_shipped_calibrations.py"),
           "the data covariance of afs= divided by M instead of M - 1"),
    # ---- calibration: call memo, trajectory objective ----------------------------------------------------
    Mutant("memo_ignores_state", "_memo.py",
           "torch.equal(bs, sigma) and torch.equal(bx, x)", "torch.equal(bs, sigma)",
           ("tests/test_calibrate.py",), "the memo re-uses a call at the same sigma from another state"),
    Mutant("memo_ignores_sigma", "_memo.py",
           "torch.equal(bs, sigma) and torch.equal(bx, x)", "torch.equal(bx, x)",
           ("tests/test_calibrate.py",), "the memo re-uses a call from the same state at another sigma"),
    Mutant("trajectory_weight_not_propagated", "calibrate.py",
           "w = math.sqrt(trajectory_weight * s2 / (s2 + sig * sig) / len(inner))",
           "w = math.sqrt(trajectory_weight / len(inner))",
           ("tests/test_calibrate.py",), "trajectory terms without the factor s2 / (s2 + sigma^2)"),
    Mutant("trajectory_interp_wrong_end", "calibration_trajectory.py",
           "t = (a - sigma) / (a - b)", "t = (sigma - b) / (a - b)",
           ("tests/test_calibrate.py",), "interpolation weight on the wrong neighbour"),
    Mutant("trajectory_includes_the_end", "calibrate.py",
           "inner = [(sig, st) for sig, st in states if sig > 0]", "inner = [(sig, st) for sig, st in states]",
           ("tests/test_calibrate.py",), "the end point (sigma = 0) counted again among the trajectory's levels"),
)
# fmt: on


# ---- running --------------------------------------------------------------------------------------------


def apply(text: str, m: Mutant) -> str | None:
    """The mutated source, or None when the snippet is stale (missing, or a different number of times)."""
    if text.count(m.original) != m.count:
        return None
    start = -1
    for _ in range(m.occurrence):
        start = text.index(m.original, start + 1)
    return text[:start] + m.replacement + text[start + len(m.original) :]


# A pytest plugin written into the copy: the suite's own Hypothesis profile ("ci": derandomised, so the same
# examples are generated) without the shrink phase. A mutant is killed by the first failing example; shrinking
# it to a minimal one only costs time (up to a minute per mutant on hypothesis tests).
_PLUGIN = """
import pytest
from hypothesis import Phase, settings


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    ci = settings.get_profile("ci")
    phases = [p for p in ci.phases if p not in (Phase.shrink, Phase.explain)]
    settings.register_profile("mutation", ci, phases=phases)
    settings.load_profile("mutation")
"""


def make_copy(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache")
    shutil.copytree(ROOT / "src", dest / "src", ignore=ignore)
    shutil.copytree(ROOT / "tests", dest / "tests", ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")
    (dest / "_mutation_profile.py").write_text(_PLUGIN)


def env_for(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(copy / "src"), str(copy), env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.setdefault("HYPOTHESIS_PROFILE", "ci")
    return env


def pytest_cmd(tests: tuple[str, ...]) -> list[str]:
    return [
        sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "_mutation_profile",
        "-o", "addopts=", *tests,
    ]  # fmt: skip


def run_mutant(copy: Path, m: Mutant, timeout: float, check_equivalent: bool = False) -> tuple[str, float, str]:
    """Apply ``m`` inside ``copy``, run its tests, restore the file. Returns (status, seconds, detail).

    Equivalent mutants are not run unless ``check_equivalent``; then surviving confirms the claim ("equivalent")
    and failing refutes it ("refuted": the reason given is wrong, or a test is too strict)."""
    path = copy / PKG / m.file
    original = path.read_text()
    mutated = apply(original, m)
    if mutated is None:  # checked first: an equivalent mutant can go stale too
        found = original.count(m.original)
        return "stale", 0.0, f"snippet found {found} times, expected {m.count}"
    if m.equivalent and not check_equivalent:
        return "equivalent", 0.0, m.equivalent
    path.write_text(mutated)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            pytest_cmd(m.tests), cwd=copy, env=env_for(copy), capture_output=True, text=True, timeout=timeout
        )
        status = "survived" if proc.returncode == 0 else "killed"
        if m.equivalent:
            status = "equivalent" if status == "survived" else "refuted"
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("FAILED") or ln.startswith("ERROR")]
        detail = lines[0] if lines else proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        if proc.returncode not in (0, 1):  # collection errors, crashes: still a failing suite, say so
            detail = f"pytest exit {proc.returncode}: {detail}"
    except subprocess.TimeoutExpired:
        status, detail = "timeout", f"> {timeout:.0f} s"
    finally:
        path.write_text(original)
    return status, time.perf_counter() - t0, detail


def baseline(copy: Path, tests: list[str], timeout: float) -> None:
    """The unmutated copy must import from itself and pass every named test file, or the score means nothing."""
    probe = subprocess.run(
        [sys.executable, "-c", "import edm_samplers, sys; sys.stdout.write(edm_samplers.__file__)"],
        cwd=copy, env=env_for(copy), capture_output=True, text=True, check=True,
    )  # fmt: skip
    if not Path(probe.stdout).resolve().is_relative_to(copy.resolve()):
        raise SystemExit(f"the copy does not import its own src/ (got {probe.stdout}); check PYTHONPATH")
    proc = subprocess.run(pytest_cmd(tuple(tests)), cwd=copy, env=env_for(copy), capture_output=True, text=True,
                          timeout=timeout * 4)  # fmt: skip
    if proc.returncode != 0:
        print(proc.stdout[-4000:], proc.stderr[-2000:], sep="\n")
        raise SystemExit("the unmutated tests fail: fix them before measuring mutants")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", action="append", default=[], help="run only mutants whose name contains this (repeatable)")
    ap.add_argument("--list", action="store_true", help="print the mutants and whether they apply; run nothing")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant (default 300)")
    ap.add_argument(
        "--check-equivalent", action="store_true", help="also run the mutants marked equivalent (they should survive)"
    )
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of the named test files")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument(
        "--tests", nargs="+", metavar="FILE",
        help="run these test files for every mutant instead of each mutant's own list (e.g. to see which "
        "mutants one new test file kills)",
    )  # fmt: skip
    args = ap.parse_args(argv)

    names = [m.name for m in MUTANTS]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise SystemExit(f"duplicate mutant names: {sorted(dup)}")
    chosen = [m for m in MUTANTS if not args.k or any(k in m.name for k in args.k)]
    if args.tests:
        chosen = [dataclasses.replace(m, tests=tuple(args.tests)) for m in chosen]

    if args.list:
        for m in chosen:
            text = (ROOT / PKG / m.file).read_text()
            state = "equivalent" if m.equivalent else ("ok" if apply(text, m) is not None else "STALE")
            print(f"{m.name:40s} {m.file:28s} {state:10s} {m.description}")
        return 0

    import torch  # only for the header

    print(f"# mutation run: {len(chosen)} mutants, python {platform.python_version()}, torch {torch.__version__}, "
          f"{platform.machine()} {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")  # fmt: skip
    results = []
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edm-mutation-") as tmp:
        copy = Path(tmp)
        make_copy(copy)
        if not args.no_baseline:
            files = sorted({t for m in chosen if args.check_equivalent or not m.equivalent for t in m.tests})
            t0 = time.perf_counter()
            baseline(copy, files, args.timeout)
            print(f"# baseline: {len(files)} test files pass unmutated ({time.perf_counter() - t0:.0f} s)")
        print(f"| {'mutant':40s} | {'file':26s} | {'result':10s} | {'s':>5s} |")
        print(f"|{'-' * 42}|{'-' * 28}|{'-' * 12}|{'-' * 7}|")
        for m in chosen:
            status, secs, detail = run_mutant(copy, m, args.timeout, args.check_equivalent)
            results.append({"name": m.name, "file": m.file, "status": status, "seconds": round(secs, 1),
                            "description": m.description, "detail": detail})  # fmt: skip
            print(f"| {m.name:40s} | {m.file:26s} | {status:10s} | {secs:5.0f} |", flush=True)
    statuses = ("killed", "timeout", "survived", "stale", "equivalent", "refuted")
    counts = {s: sum(r["status"] == s for r in results) for s in statuses}
    run = counts["killed"] + counts["timeout"] + counts["survived"]
    score = (counts["killed"] + counts["timeout"]) / run if run else float("nan")
    print(f"\nscore: {counts['killed'] + counts['timeout']}/{run} killed ({100 * score:.1f} %); "
          f"{counts['survived']} survived, {counts['stale']} stale, {counts['equivalent']} equivalent, "
          f"{counts['refuted']} refuted equivalences, {counts['timeout']} timeouts; "
          f"{time.perf_counter() - t_all:.0f} s")  # fmt: skip
    for r in results:
        if r["status"] in ("survived", "stale", "refuted"):
            print(f"  {r['status'].upper()}: {r['name']} ({r['file']}): {r['description']}. {r['detail']}")
    if args.json:
        args.json.write_text(json.dumps({"score": score, "counts": counts, "results": results}, indent=1))
    return 0 if counts["survived"] == counts["stale"] == counts["refuted"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
