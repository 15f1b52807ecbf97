"""Question (issue 12, item 7): why are the high-order multistep samplers worse than Euler on
``karras_sigmas(n)`` (rho = 7) at low NFE with their default options, and which defaults make every one of
them at least as good as Euler at NFE 5, 10 and 20, on the shipped digits model and on a fast test problem?

Problems (the same initial noise for every sampler of a problem, Euler in the same run):

- ``digits``: ``es.models.digits()``, the protocol of ``benchmarks/digits_low_nfe.py`` and
  ``examples/evaluate_digits.py``: 898 seeds (0..897), samples clipped to [-1, 1], Frechet distance against
  real half A (899 scikit-learn digits, permutation seed 0) in the shipped classifier's features ("fd";
  converged ~8.5, real half B vs A 9.8) and in pixels ("fd_pix", the issue's metric).
- ``mixture64d``: the exact denoiser of 16 Gaussians in 64-D (stds 0.05..0.3; the problem of
  docs/benchmarks.md), 2000 seeds, float64; Frechet distance of the samples to the exact moments ("fd")
  and RMS error against a converged ODE solution from the same noise ("rms"). Also swept over every NFE
  4..25 and at data scales 0.5 and 2.

Samplers: dpmpp_2m, dpmpp_3m, unipc (order 3), deis (3), lms (4), ipndm (4), dpmpp_2m_sde, dpmpp_3m_sde
(eta = 1), and euler_ancestral for reference. Settings: the library's knobs (the old defaults, now
order_rule="full"; lower_order_final, now order_rule="final"; order=2) and order rules that need a solver
change ("new"), among them the recommended one ("auto", :func:`auto_orders`, now the library's default).
To measure rules the library has no knob for, the script runs an INDEPENDENT
REIMPLEMENTATION of the linear multistep samplers with a per-step order (section below; checked against
the library's samplers on their own knobs at the start of the run: float64 agreement ~1e-12, float32
~1e-5). The reimplementation carries the full multistep history, so no emulation by composing calls is
involved. Runs share work: the state after every step is cached under the plan's coefficients so far.

Output: markdown tables (cells: value and, in brackets, the ratio to Euler's; "x" marks ratios > 1), the
diagnosis of the cause on digits at NFE 10 (local error per step and order; the effect of lowering one
step's order), and with ``--margins K`` the proposed unit test on K seed sets.

Run: ``OMP_NUM_THREADS=1 python benchmarks/multistep_defaults.py [--json out.json]`` (about 7 CPU minutes;
``--no-digits`` for the mixture alone, ~2 min; ``--tuned`` adds the shipped tuned digits schedules;
``--margins 200 --margin-samples 250`` the unit-test margins, ~1 min; ``--sensitivity`` the rule's thresholds
varied on the mixture, ~1 min). Results: docs/multistep-defaults.md.
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

import edm_samplers as es
from _harness import finish_report

SIG_MIN, SIG_MAX = 0.002, 80.0

F64 = NDArray[np.float64]

# =====================================================================================================
# INDEPENDENT REIMPLEMENTATION (benchmark only, not the library's code): the linear multistep samplers
# with a per-step order, so that order rules the library has no knob for can be measured. Derived from
# the papers' formulas, not from src/: weights come from monomial moments (closed-form recursions)
# and an inverse Vandermonde matrix instead of the library's Gauss-Legendre quadrature of Lagrange
# polynomials. ``check_reimplementation`` compares it with the library's samplers on their own knobs.
# =====================================================================================================

# Adams-Bashforth weights for equal steps, newest first (iPNDM, Zhang & Chen 2022, Eq. 9 and warm-up).
AB = {1: (1.0,), 2: (1.5, -0.5), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}

DATA_METHODS = ("dpmpp_2m", "dpmpp_3m", "unipc", "dpmpp_2m_sde", "dpmpp_3m_sde")
DERIV_METHODS = ("deis", "lms", "ipndm")


def exp_moments(h: float, rate: float, k: int) -> F64:
    """I_p = int_0^h rate e^{-rate (h - u)} u^p du for p < k (by parts: I_p = h^p - p/rate I_{p-1})."""
    out = np.zeros(k)
    out[0] = -math.expm1(-rate * h)
    for p in range(1, k):
        out[p] = h**p - p / rate * out[p - 1]
    return out


def decay_moments(h: float, k: int) -> F64:
    """J_p = int_0^h e^{-u} u^p du for p < k (lower incomplete gamma: J_p = p J_{p-1} - h^p e^{-h})."""
    out = np.zeros(k)
    out[0] = -math.expm1(-h)
    for p in range(1, k):
        out[p] = p * out[p - 1] - h**p * math.exp(-h)
    return out


def poly_weights(nodes: F64, moments: F64) -> F64:
    """Weights w_j = int L_j(u) dmu(u) given the moments int u^p dmu, p < len(nodes): w = V^{-T} m."""
    v = np.vander(nodes, len(nodes), increasing=True)  # v[j, p] = nodes_j^p
    w: F64 = np.linalg.solve(v.T, moments).astype(np.float64)
    return w


@dataclass
class Step:
    a: float  # coefficient of the (corrected) state x_i
    b: F64  # weights of the stored outputs F_i, F_{i-1}, ... (newest first)
    corr: F64 | None = None  # UniPC: x_i <- a_{i-1} x_{i-1} + sum_j corr_j F_{i-j} (F_i = D at the predictor)
    noise: float = 0.0  # SDE: + noise * eps_i


@dataclass
class Plan:
    derivative: bool  # F = (x - D) / sigma (True) or F = D
    steps: list[Step]
    stochastic: bool = False


def build_plan(
    method: str,
    sigmas: Sequence[float],
    orders: Sequence[int],
    *,
    eta: float = 0.0,
    corrector: Sequence[bool] | None = None,
    k2_2m: bool | None = None,
) -> Plan:
    """Coefficients of ``method`` on ``sigmas`` (decreasing, optional final 0) with order ``orders[i]`` at step i.

    orders[i] is capped by the i + 1 outputs available. Data family and DEIS: the step to a final 0 is
    Euler (x = D). LMS and iPNDM integrate to 0 at the given order. UniPC: ``corrector[i]`` (default all
    True) says whether UniC corrects x_i (i >= 1) with the output evaluated there; the corrector after a
    predictor of order q has order q + 1 (nodes lambda_i, ..., lambda_{i-q}); after q = 1 it is bh2's
    trapezoid (B/2)(D_{i-1} + D_i). ``k2_2m``: data-family steps of order 2 use the published 2M weights
    (default: True for dpmpp_2m(_sde) and UniPC, False for the exact kM, which then uses the exact linear
    Lagrange integral).
    """
    if k2_2m is None:
        k2_2m = method in ("dpmpp_2m", "dpmpp_2m_sde", "unipc")
    s = np.asarray(sigmas, dtype=np.float64)
    n = len(s) - 1
    with np.errstate(divide="ignore"):
        lam = -np.log(s)
    steps: list[Step] = []
    ks: list[int] = []
    for i in range(n):
        k = max(1, min(int(orders[i]), i + 1))
        ks.append(k)
        if method in DATA_METHODS:
            if s[i + 1] == 0:
                steps.append(Step(0.0, np.array([1.0])))
                ks[-1] = 1
                continue
            h = lam[i + 1] - lam[i]
            rate = 1.0 + eta
            a = s[i + 1] / s[i] * math.exp(-eta * h)
            nz = s[i + 1] * math.sqrt(-math.expm1(-2 * eta * h)) if eta > 0 else 0.0
            big_b = -math.expm1(-rate * h)
            if k == 2 and k2_2m:
                # DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2): D' = (1 + 1/(2r)) D_i - 1/(2r) D_{i-1}, r = h_{i-1}/h
                r = (lam[i] - lam[i - 1]) / h
                b = np.array([big_b * (1 + 0.5 / r), -big_b * 0.5 / r])
            else:
                nodes = lam[i - np.arange(k)] - lam[i]
                b = poly_weights(nodes, exp_moments(h, rate, k))
            steps.append(Step(a, b, noise=nz))
        elif method in DERIV_METHODS:
            if method == "deis" and s[i + 1] == 0:
                steps.append(Step(1.0, np.array([-s[i]])))  # x + (0 - sigma) (x - D) / sigma = D
                ks[-1] = 1
                continue
            if method == "ipndm":
                b = (s[i + 1] - s[i]) * np.asarray(AB[k])
            elif method == "lms":
                d = s[i + 1] - s[i]
                mom = np.array([d ** (p + 1) / (p + 1) for p in range(k)])
                b = poly_weights(s[i - np.arange(k)] - s[i], mom)
            else:  # DEIS in log sigma: s = sigma_i e^{-u}, ds = -sigma_i e^{-u} du, u in [0, h]
                h = lam[i + 1] - lam[i]
                b = -s[i] * poly_weights(lam[i - np.arange(k)] - lam[i], decay_moments(h, k))
            steps.append(Step(1.0, b))
        else:
            raise ValueError(f"unknown method {method!r}")
    if method == "unipc":
        for i in range(1, n):
            if corrector is not None and not corrector[i]:
                continue
            q = ks[i - 1]
            hp = lam[i] - lam[i - 1]
            if q == 1:
                big = -math.expm1(-hp)
                c = np.array([0.5 * big, 0.5 * big])
            else:
                nodes = np.concatenate([[hp], lam[i - 1 - np.arange(q)] - lam[i - 1]])
                c = poly_weights(nodes, exp_moments(hp, 1.0, q + 1))
            steps[i].corr = c
    return Plan(method in DERIV_METHODS, steps, stochastic=eta > 0)


def _step_key(prev: int, st: Step) -> int:
    c = b"" if st.corr is None else st.corr.tobytes()
    return hash((prev, st.a, st.b.tobytes(), c, st.noise))


class Runner:
    """Runs plans on one problem (denoiser, initial states, per-step noise draws), caching the state after
    every step under a hash of the plan's coefficients so far: order rules that differ only on the last
    steps share the work of the first ones, and identical plans run once."""

    def __init__(self, den: Callable[..., torch.Tensor], x0: torch.Tensor, eps: list[torch.Tensor]) -> None:
        self.den, self.x0, self.eps = den, x0, eps
        self.cache: dict[int, tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]] = {}
        self.nfe = 0  # denoiser evaluations actually made (batch-sized)

    def __call__(self, sigmas: Sequence[float], plan: Plan) -> torch.Tensor:
        s = [float(v) for v in sigmas]
        keys, k = [], hash(("start", tuple(s), plan.derivative))
        for st in plan.steps:
            k = _step_key(k, st)
            keys.append(k)
        hist: list[torch.Tensor] = []
        start, x, x_prev = 0, self.x0, self.x0
        for i in range(len(keys), 0, -1):
            if keys[i - 1] in self.cache:
                x, hist, x_prev = self.cache[keys[i - 1]]
                start = i
                break
        hist = list(hist)
        for i in range(start, len(plan.steps)):
            st = plan.steps[i]
            row = torch.full((x.shape[0],), s[i], dtype=x.dtype, device=x.device)
            with torch.no_grad():
                d = self.den(x, row)
            self.nfe += 1
            f = (x - d) / s[i] if plan.derivative else d
            hist.insert(0, f)
            del hist[5:]
            if st.corr is not None:  # UniPC: recompute x_i from x_{i-1} with the corrector's weights
                x = x_prev * plan.steps[i - 1].a
                for j, c in enumerate(st.corr):
                    x = x + float(c) * hist[j]
            x_new = x * st.a
            for j, c in enumerate(st.b):
                x_new = x_new + float(c) * hist[j]
            if plan.stochastic:
                x_new = x_new + st.noise * self.eps[i]
            x_prev, x = x, x_new
            self.cache[keys[i]] = (x, list(hist), x_prev)
        return x


# =====================================================================================================
# order rules: which order each step uses. A rule maps (method, nominal order p, sigmas) to one order per
# step (capped by the outputs available) and says whether order-2 steps of the exact kM use the published
# 2M weights. "library" rules are what the existing knobs do; "new" ones need a solver change.
# =====================================================================================================

NOMINAL = {
    "dpmpp_2m": 2,
    "dpmpp_3m": 3,
    "unipc": 3,
    "deis": 3,
    "lms": 4,
    "ipndm": 4,
    "dpmpp_2m_sde": 2,
    "dpmpp_3m_sde": 3,
}
ODE_METHODS = ("dpmpp_2m", "dpmpp_3m", "unipc", "deis", "lms", "ipndm")
SDE_METHODS = ("dpmpp_2m_sde", "dpmpp_3m_sde")


def log_steps(sigmas: Sequence[float]) -> list[float]:
    """h_i = ln(sigma_i / sigma_{i+1}) (inf for the step to 0)."""
    s = list(sigmas)
    return [math.log(s[i] / s[i + 1]) if s[i + 1] > 0 else math.inf for i in range(len(s) - 1)]


def auto_orders(
    method: str, order: int, sigmas: Sequence[float], *, max_log_step: float = 1.0, low_sigma: float = 0.1
) -> list[int]:
    """THE RECOMMENDED RULE. Data-prediction solvers (2M, kM, UniPC, their SDE variants), step i from
    sigma_i to sigma_{i+1}:
      order 1 if sigma_{i+1} <= low_sigma (this includes the step to a final 0, Euler already);
      else order min(order, 2), with the published 2M weights, if h_i = ln(sigma_i / sigma_{i+1}) > max_log_step;
      else the nominal order (warm-up orders 1, 2, ... as before).
    Derivative solvers (DEIS, LMS, iPNDM): lower_order_final, i.e. order min(order, steps left)."""
    s = list(sigmas)
    n = len(s) - 1
    h = log_steps(s)
    out = []
    for i in range(n):
        if method in DERIV_METHODS:
            out.append(min(order, n - i))
        elif s[i + 1] <= low_sigma:
            out.append(1)
        elif h[i] > max_log_step:
            out.append(min(order, 2))
        else:
            out.append(order)
    return out


@dataclass
class Setting:
    label: str
    kind: str  # "library" (existing knobs) or "new" (needs a solver change; reimplemented here)
    doc: str
    orders: Callable[[str, int, Sequence[float]], list[int]]
    k2_2m: bool | None = None  # order-2 steps of the exact kM with the 2M weights (None: as the library)
    methods: tuple[str, ...] = ODE_METHODS + SDE_METHODS
    corrector: bool = True  # UniPC's corrector on every step


def _full(m: str, p: int, s: Sequence[float]) -> list[int]:
    return [p] * (len(s) - 1)


def _lof(m: str, p: int, s: Sequence[float]) -> list[int]:
    n = len(s) - 1
    return [min(p, n - i) for i in range(n)]


def _order2(m: str, p: int, s: Sequence[float]) -> list[int]:
    return [min(p, 2)] * (len(s) - 1)


def _euler_final(m: str, p: int, s: Sequence[float]) -> list[int]:
    n = len(s) - 1
    return [p] * (n - 2) + [1, 1]


def _lof_euler_final(m: str, p: int, s: Sequence[float]) -> list[int]:
    n = len(s) - 1
    return [p] * (n - 3) + [min(p, 2), 1, 1]


def _hcap(m: str, p: int, s: Sequence[float]) -> list[int]:
    o = auto_orders("dpmpp_3m", p, s, low_sigma=0.0)
    return [*o[:-2], 1, 1]  # with euler_final


def _low_sigma(m: str, p: int, s: Sequence[float]) -> list[int]:
    return auto_orders("dpmpp_3m", p, s, max_log_step=math.inf)


def _auto(m: str, p: int, s: Sequence[float]) -> list[int]:
    return auto_orders(m, p, s)


_DATA = ("dpmpp_2m", "dpmpp_3m", "unipc", *SDE_METHODS)
SETTINGS = [
    Setting("default", "library", "old defaults, order_rule=full: full order (warm-up 1, 2, ...)", _full),
    Setting("lof", "library", "order_rule=final (old lower_order_final=True): order <= steps left", _lof),
    Setting("order=2", "library", "order=2 (exact order 2 for dpmpp_3m)", _order2, methods=ODE_METHODS[1:]),
    Setting("no corrector", "new", "UniPC without its corrector, full order", _full, None, ("unipc",), False),
    Setting("euler_final", "new", "order 1 on the step that lands on sigma_min (then Euler to 0)", _euler_final, True),
    Setting("lof+ef", "new", "order <= 2 on the step before that, order 1 on it", _lof_euler_final, True, _DATA),
    Setting("h<=1", "new", "order <= 2 (2M weights) where h = ln(s_i/s_i+1) > 1; euler_final", _hcap, True, _DATA),
    Setting("s<=0.1", "new", "order 1 on steps ending at sigma <= 0.1", _low_sigma, True, _DATA),
    Setting("auto", "new", "RECOMMENDED: h<=1 and s<=0.1 (data family); lof (derivative family)", _auto, True),
]  # fmt: skip


# =====================================================================================================
# problems: a denoiser, initial states, noise draws for the SDE samplers, and metrics
# =====================================================================================================


@dataclass
class Problem:
    name: str
    den: Callable[..., torch.Tensor]
    x0: torch.Tensor  # at sigma_max = 80
    seeds: range
    metrics: Callable[[torch.Tensor], dict[str, float]]  # sample -> named metrics (lower is better)
    runner: Runner | None = None

    def noise_draws(self, n: int) -> list[torch.Tensor]:
        """The n per-step draws a stochastic sampler makes, from the same per-seed streams as x0."""
        src = es.PerSampleNoise(self.seeds)
        src.randn(self.x0.shape, dtype=self.x0.dtype, device=self.x0.device)  # the draw that made x0
        return [src.randn(self.x0.shape, dtype=self.x0.dtype, device=self.x0.device) for _ in range(n)]


def digits_problem(samples: int = 898) -> Problem:
    """The shipped digits model, protocol of examples/evaluate_digits.py and benchmarks/digits_low_nfe.py:
    seeds 0..897, clipped to [-1, 1]; Frechet distance against real half A in the classifier's features
    ("fd") and in pixels ("fd_pix", the issue's metric)."""
    from edm_samplers.models import digits, digits_features
    from edm_samplers.models.digits import load_digits_images

    den = digits().requires_grad_(False)
    real = load_digits_images()
    assert isinstance(real, torch.Tensor)
    perm = torch.randperm(real.shape[0], generator=torch.Generator().manual_seed(0))
    half_a = real[perm[:899]]
    feats_a = digits_features(half_a)
    pix_a = half_a.reshape(half_a.shape[0], -1)
    seeds = range(samples)
    x0 = es.PerSampleNoise(seeds).randn((samples, 1, 8, 8), dtype=torch.float32, device="cpu") * SIG_MAX

    def metrics(x: torch.Tensor) -> dict[str, float]:
        img = x.float().clamp(-1, 1)
        if not bool(torch.isfinite(img).all()):
            return {"fd": math.inf, "fd_pix": math.inf}
        return {
            "fd": es.evaluation.frechet_distance(digits_features(img), feats_a),
            "fd_pix": es.evaluation.frechet_distance(img.reshape(img.shape[0], -1), pix_a),
        }

    return Problem("digits", den, x0, seeds, metrics)


def mixture(seed: int = 64, k: int = 16, dim: int = 64, scale: float = 1.0) -> es.evaluation.GaussianMixture:
    """The fast test problem: 16 isotropic Gaussians in 64-D, means ~ N(0, 0.25 I), stds uniform in
    [0.05, 0.3], weights uniform in [0.5, 1.5] (normalised); the "mixture64d" of docs/benchmarks.md.
    ``scale`` multiplies means and stds (the data's scale, to test the rule's absolute sigma threshold)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(k, dim, generator=g, dtype=torch.float64) * 0.5 * scale
    stds = (0.05 + 0.25 * torch.rand(k, generator=g, dtype=torch.float64)) * scale
    weights = 0.5 + torch.rand(k, generator=g, dtype=torch.float64)
    return es.evaluation.GaussianMixture(means, stds, weights)


def mixture_moments(gm: es.evaluation.GaussianMixture) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact mean and covariance of the mixture (law of total covariance)."""
    w, st = gm.weights, gm.stds
    mu = gm.means.reshape(w.shape[0], -1)
    mean = w @ mu
    second = torch.einsum("k,ki,kj->ij", w, mu, mu) + float(w @ st**2) * torch.eye(mu.shape[1], dtype=mu.dtype)
    return mean, second - torch.outer(mean, mean)


def frechet_to_moments(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> float:
    from edm_samplers.evaluation.metrics import gaussian_frechet_distance

    f = x.reshape(x.shape[0], -1).double()
    if not bool(torch.isfinite(f).all()):
        return math.inf
    return gaussian_frechet_distance(f.mean(0), torch.cov(f.T), mean, cov)


def mixture_problem(samples: int = 2000, seed0: int = 0, reference_steps: int = 256, scale: float = 1.0) -> Problem:
    """The mixture's exact denoiser in float64; metrics: Frechet distance of the samples to the exact
    moments ("fd") and the RMS error per coordinate against a converged ODE solution from the same
    noise (Heun, ``reference_steps`` steps; "rms")."""
    gm = mixture(scale=scale)
    mean, cov = mixture_moments(gm)
    seeds = range(seed0, seed0 + samples)
    x0 = es.PerSampleNoise(seeds).randn((samples, 64), dtype=torch.float64, device="cpu") * SIG_MAX
    ref = es.heun_sample(gm, x0.clone(), es.karras_sigmas(reference_steps))

    def metrics(x: torch.Tensor) -> dict[str, float]:
        return {"fd": frechet_to_moments(x, mean, cov), "rms": float((x - ref).pow(2).mean().sqrt())}

    return Problem("mixture64d" + (f" x{scale:g}" if scale != 1 else ""), gm, x0, seeds, metrics)


# =====================================================================================================
# measurements
# =====================================================================================================


def plan_for(setting: Setting, method: str, sigmas: Sequence[float]) -> Plan:
    p = NOMINAL[method]
    eta = 1.0 if method in SDE_METHODS else 0.0
    k2 = setting.k2_2m if method in ("dpmpp_3m", "dpmpp_3m_sde") else None
    corr = None if setting.corrector else [False] * (len(sigmas) - 1)
    return build_plan(method, sigmas, setting.orders(method, p, sigmas), eta=eta, k2_2m=k2, corrector=corr)


def euler_plan(sigmas: Sequence[float]) -> Plan:
    return build_plan("dpmpp_2m", sigmas, [1] * (len(sigmas) - 1))  # order 1 of any of them is Euler


LIBRARY: dict[str, Callable[..., torch.Tensor]] = {
    "dpmpp_2m": es.dpmpp_2m_sample,
    "dpmpp_3m": es.dpmpp_3m_sample,
    "unipc": es.unipc_sample,
    "deis": es.deis_sample,
    "lms": es.lms_sample,
    "ipndm": es.ipndm_sample,
    "dpmpp_2m_sde": es.dpmpp_2m_sde_sample,
    "dpmpp_3m_sde": es.dpmpp_3m_sde_sample,
}


def check_reimplementation(prob: Problem, nfes: Sequence[int], lof_too: bool) -> float:
    """Max |reimplementation - library| over every method (library knobs: order_rule="full", the old default,
    "auto", the library's default since this study, and order_rule="final", the old lower_order_final=True,
    when ``lof_too``), on ``prob``'s first 64 states."""
    x0 = prob.x0[:64]
    worst = 0.0
    for n in nfes:
        s = es.karras_sigmas(n).tolist()
        eps = [e[:64] for e in prob.noise_draws(n)]
        run = Runner(prob.den, x0, eps)
        for m, f in LIBRARY.items():
            rule = {"default": "full", "lof": "final", "auto": "auto"}
            for st in [
                s for s in SETTINGS if s.label in (("default", "auto", "lof") if lof_too else ("default", "auto"))
            ]:
                kw: dict[str, Any] = {"order_rule": rule[st.label]}
                if m in SDE_METHODS:
                    kw["noise"] = es.PrecomputedNoise(torch.stack(eps))
                with torch.no_grad():
                    lib = f(prob.den, x0.clone(), s, **kw)
                worst = max(worst, float((run(s, plan_for(st, m, s)) - lib).abs().max()))
    return worst


def evaluate(prob: Problem, nfes: Sequence[int], settings: Sequence[Setting], methods: Sequence[str]) -> dict[str, Any]:
    """metrics[nfe][method][setting] (plus "euler" and "euler_ancestral" rows)."""
    run = Runner(prob.den, prob.x0, prob.noise_draws(max(nfes)))
    prob.runner = run
    out: dict[str, Any] = {}
    for n in nfes:
        s = es.karras_sigmas(n).tolist()
        res: dict[str, dict[str, dict[str, float]]] = {"euler": {"-": prob.metrics(run(s, euler_plan(s)))}}
        for m in methods:
            res[m] = {}
            for st in settings:
                if m in st.methods:
                    res[m][st.label] = prob.metrics(run(s, plan_for(st, m, s)))
        with torch.no_grad():
            anc = es.euler_ancestral_sample(
                prob.den, prob.x0.clone(), s, noise=es.PrecomputedNoise(torch.stack(run.eps[:n]))
            )
        res["euler_ancestral"] = {"-": prob.metrics(anc)}
        out[str(n)] = res
    return out


def print_tables(prob: str, results: dict[str, Any], settings: Sequence[Setting], metric: str, note: str) -> None:
    for n, res in results.items():
        e = res["euler"]["-"][metric]
        print(f"\n### {prob}, NFE {n}: {metric} (ratio to Euler's {e:.3g}); {note}\n")
        print("| sampler | " + " | ".join(st.label for st in settings) + " |")
        print("|---" * (len(settings) + 1) + "|")
        for m, row in res.items():
            if m in ("euler", "euler_ancestral"):
                continue
            cells = []
            for st in settings:
                v = row.get(st.label)
                if v is None:
                    cells.append("")
                else:
                    r = v[metric] / e
                    cells.append(f"{v[metric]:.3g} ({r:.2f})" + (" **x**" if r > 1 else ""))
            print(f"| {m} | " + " | ".join(cells) + " |")
        a = res["euler_ancestral"]["-"][metric]
        print(f"| euler_ancestral (eta 1) | {a:.3g} ({a / e:.2f}) |" + " |" * (len(settings) - 1))


def print_summary(prob: str, results: dict[str, Any], metric: str, methods: Sequence[str]) -> None:
    nfes = list(results)
    print(f"\n### {prob}: {metric}, library default -> recommended ('auto'), Euler in the first row\n")
    print("| sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |")
    print("|---" * (len(nfes) + 1) + "|")
    print("| euler | " + " | ".join(f"{results[n]['euler']['-'][metric]:.3g}" for n in nfes) + " |")
    for m in methods:
        cells = []
        for n in nfes:
            e = results[n]["euler"]["-"][metric]
            d, a = results[n][m]["default"][metric], results[n][m]["auto"][metric]
            cells.append(f"{d:.3g} -> {a:.3g} ({a / e:.2f}x)")
        print(f"| {m} | " + " | ".join(cells) + " |")
    print("| euler_ancestral | " + " | ".join(f"{results[n]['euler_ancestral']['-'][metric]:.3g}" for n in nfes) + " |")


def robustness_sweep(
    prob: Problem, nfes: Sequence[int], methods: Sequence[str], settings: Sequence[Setting] | None = None
) -> dict[str, Any]:
    """For every NFE in ``nfes``: FD / Euler's FD of every setting (default: the current defaults and the
    recommended rule). Prints the worst case per setting, then the per-NFE rows of default and auto."""
    settings = list(settings) if settings is not None else [SETTINGS[0], SETTINGS[-1]]
    run = Runner(prob.den, prob.x0, prob.noise_draws(max(nfes)))
    table: dict[str, dict[str, list[float]]] = {m: {} for m in methods}
    for n in nfes:
        s = es.karras_sigmas(n).tolist()
        e = prob.metrics(run(s, euler_plan(s)))["fd"]
        for m in methods:
            for st in settings:
                if m in st.methods:
                    r = prob.metrics(run(s, plan_for(st, m, s)))["fd"] / e
                    table[m].setdefault(st.label, []).append(r)
    print(f"\n### {prob.name}: Frechet distance / Euler's over every NFE {nfes[0]}..{nfes[-1]}: worst (at NFE)\n")
    print("| sampler | " + " | ".join(st.label for st in settings) + " |")
    print("|---" * (len(settings) + 1) + "|")
    for m in methods:
        cells = []
        for st in settings:
            v = table[m].get(st.label)
            cells.append("" if v is None else f"{max(v):.2f} ({nfes[int(np.argmax(v))]})")
        print(f"| {m} | " + " | ".join(cells) + " |")
    if not any(lab in table[m] for m in methods for lab in ("default", "auto")):
        return table
    print(f"\nper NFE ({' '.join(str(n) for n in nfes)}):\n")
    print("| sampler | rule | ratios |")
    print("|---|---|---|")
    for m in methods:
        for lab in ("default", "auto"):
            if lab in table[m]:
                print(f"| {m} | {lab} | " + " ".join(f"{r:.2f}" for r in table[m][lab]) + " |")
    return table


def _thresholds(m: str, p: int, s: Sequence[float], max_log_step: float, low_sigma: float) -> list[int]:
    return auto_orders(m, p, s, max_log_step=max_log_step, low_sigma=low_sigma)


def sensitivity(prob: Problem, nfes: Sequence[int]) -> dict[str, Any]:
    """Worst FD / Euler's over ``nfes`` of the rule with other thresholds (data-prediction solvers)."""
    grid = [(hmax, tau) for hmax in (0.8, 1.0, 1.1, 1.25) for tau in (0.05, 0.1, 0.2)]
    settings = [
        Setting(
            f"h>{hmax:g},s<={tau:g}",
            "new",
            "auto with other thresholds",
            functools.partial(_thresholds, max_log_step=hmax, low_sigma=tau),
            True,
            _DATA[:3],
        )
        for hmax, tau in grid
    ]
    print("\nThreshold sensitivity of the rule (max_log_step h, low_order_sigma s):")
    return robustness_sweep(prob, nfes, _DATA[:3], settings)


def reference_trajectory(
    den: Callable[..., torch.Tensor], x0: torch.Tensor, sigmas: Sequence[float], sub: int = 16
) -> list[torch.Tensor]:
    """x(sigma_i) for every positive sigma_i: Heun with ``sub`` log-uniform substeps per interval."""
    xs = [x0]
    s = [v for v in sigmas if v > 0]
    with torch.no_grad():
        for i in range(len(s) - 1):
            fine = np.geomspace(s[i], s[i + 1], sub + 1).tolist()
            xs.append(es.heun_sample(den, xs[-1], fine))
    return xs


def diagnose(prob: Problem, n: int, seeds: int = 200) -> dict[str, Any]:
    """The measurements behind the cause: (1) local error of one step of each order started on the
    converged trajectory, per step; (2) the global effect of lowering the order of one step only."""
    s = es.karras_sigmas(n).tolist()
    h = log_steps(s)
    print(f"\n### {prob.name}, karras_sigmas({n}): where the error comes from\n")
    print("| step i | sigma_i -> sigma_i+1 | h_i = ln ratio | h_i / h_i-1 |")
    print("|---|---|---|---|")
    for i in range(n - 1):
        ratio = f"{h[i] / h[i - 1]:.2f}" if i > 0 else ""
        print(f"| {i} | {s[i]:.3g} -> {s[i + 1]:.3g} | {h[i]:.2f} | {ratio} |")
    x0 = prob.x0[:seeds].double()

    def den64(x: torch.Tensor, sig: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return prob.den(x.to(prob.x0.dtype), sig.to(prob.x0.dtype)).double()

    xs = reference_trajectory(den64, x0, s)
    ds = [den64(xs[i], torch.full((seeds,), s[i], dtype=torch.float64)) for i in range(n)]
    local: dict[str, list[list[float]]] = {}
    print(f"\nLocal error (RMS per coordinate, {seeds} seeds) of ONE step from the converged x(sigma_i) with exact")
    print("past outputs, by order 1 / 2 / 3 [/ 4] (order 1 = Euler; UniPC includes its corrector):\n")
    print("| sampler | " + " | ".join(f"step {i}" for i in range(1, n - 1)) + " |")
    print("|---" * (n - 1) + "|")
    for m in ODE_METHODS:
        p = NOMINAL[m]
        rows = []
        for i in range(1, n - 1):
            errs = []
            for k in range(1, p + 1):
                pl = build_plan(m, s, [k] * n)
                st = pl.steps[i]
                f = [(xs[i - j] - ds[i - j]) / s[i - j] if pl.derivative else ds[i - j] for j in range(len(st.b))]
                xn = st.a * xs[i] + sum(float(c) * f[j] for j, c in enumerate(st.b))
                nxt = pl.steps[i + 1].corr if i + 1 < n else None
                if nxt is not None:  # UniPC: correct x_{i+1} with D evaluated at the predicted state
                    dn = den64(xn, torch.full((seeds,), s[i + 1], dtype=torch.float64))
                    fc = [dn] + [ds[i - j] for j in range(len(nxt) - 1)]
                    xn = st.a * xs[i] + sum(float(c) * fc[j] for j, c in enumerate(nxt))
                errs.append(float((xn - xs[i + 1]).pow(2).mean().sqrt()))
            rows.append(errs)
        local[m] = rows
        print(f"| {m} | " + " | ".join("/".join(f"{e:.3f}" for e in r) for r in rows) + " |")
    assert prob.runner is not None
    run = prob.runner
    e = prob.metrics(run(s, euler_plan(s)))["fd"]
    ablation: dict[str, dict[str, float]] = {}
    print(f"\nFrechet distance when ONE step's order is lowered (all others full order; Euler {e:.3g}):\n")
    print("| sampler | full | " + " | ".join(f"step {i} -> 2 / 1" for i in range(2, n - 1)) + " |")
    print("|---" * (n - 1) + "|")
    for m in ("dpmpp_3m", "unipc"):
        p = NOMINAL[m]
        full = prob.metrics(run(s, build_plan(m, s, [p] * n)))["fd"]
        ablation[m] = {"full": full}
        cells = []
        for i in range(2, n - 1):
            vals = []
            for k in (2, 1):
                o = [p] * n
                o[i] = k
                v = prob.metrics(run(s, build_plan(m, s, o)))["fd"]
                ablation[m][f"{i}:{k}"] = v
                vals.append(f"{v:.3g}")
            cells.append(" / ".join(vals))
        print(f"| {m} | {full:.3g} | " + " | ".join(cells) + " |")
    return {"local_error": local, "ablation": ablation}


def paired_frechet(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Frechet distance between the Gaussian fits of two sample sets drawn from the same initial noise:
    their shared finite-sample fluctuation cancels, so it measures the sampler's distortion alone."""
    a, b = x.reshape(x.shape[0], -1).double(), ref.reshape(ref.shape[0], -1).double()
    if not bool(torch.isfinite(a).all()):
        return math.inf
    return es.evaluation.frechet_distance(a, b)


def margins(sets: int, samples: int, nfes: Sequence[int], reference_steps: int = 64) -> dict[str, Any]:
    """The proposed unit test on many seed sets (disjoint seeds, ``samples`` each) of the mixture: for the
    current and the recommended defaults, statistic(sampler) / statistic(Euler) with three statistics:
    "fd" (to the exact moments), "paired" (to the converged solution's sample from the same noise:
    Heun with ``reference_steps`` steps) and "rms" (pathwise, to the same solution)."""
    gm = mixture()
    mean, cov = mixture_moments(gm)
    ratios: dict[str, list[float]] = {}
    t0 = time.time()
    for k in range(sets):
        seeds = range(10_000 + k * samples, 10_000 + (k + 1) * samples)
        x0 = es.PerSampleNoise(seeds).randn((samples, 64), dtype=torch.float64, device="cpu") * SIG_MAX
        ref = es.heun_sample(gm, x0.clone(), es.karras_sigmas(reference_steps))
        run = Runner(gm, x0, [])

        def stats(x: torch.Tensor, ref: torch.Tensor = ref) -> dict[str, float]:
            return {
                "fd": frechet_to_moments(x, mean, cov),
                "paired": paired_frechet(x, ref),
                "rms": float((x - ref).pow(2).mean().sqrt()),
            }

        for n in nfes:
            s = es.karras_sigmas(n).tolist()
            e = stats(run(s, euler_plan(s)))
            for m in ODE_METHODS:
                for st in (SETTINGS[0], SETTINGS[-1]):
                    v = stats(run(s, plan_for(st, m, s)))
                    for key in v:
                        ratios.setdefault(f"{key}|{m}|{st.label}|{n}", []).append(v[key] / e[key])
    print(
        f"\n### Proposed unit test on {sets} seed sets of {samples} (mixture64d): statistic / Euler's "
        f"({time.time() - t0:.0f} s)\n"
    )
    for key in ("fd", "paired", "rms"):
        print(f"\n{key}: default min / median / max; auto min / median / max / mean + 3.1 sd\n")
        print("| sampler | NFE | default | auto |")
        print("|---|---|---|---|")
        for m in ODE_METHODS:
            for n in nfes:
                d = np.array(ratios[f"{key}|{m}|default|{n}"])
                a = np.array(ratios[f"{key}|{m}|auto|{n}"])
                print(
                    f"| {m} | {n} | {d.min():.2f} / {np.median(d):.2f} / {d.max():.2f} | {a.min():.2f} / "
                    f"{np.median(a):.2f} / {a.max():.2f} / {a.mean() + 3.1 * a.std():.2f} |"
                )
    return ratios


def tuned_schedules(prob: Problem, nfes: Sequence[int]) -> dict[str, Any]:
    """The shipped tuned schedules (tuned for full order) under the current and the recommended defaults."""
    # The registry labels the shipped schedules are stored under (they were tuned at full order).
    keys = {"dpmpp_2m": "dpmpp_2m:order_rule=full", "dpmpp_3m": "dpmpp_3m:order=3,order_rule=full"}
    keys |= {"unipc": "unipc:order=3,order_rule=full", "deis": "deis:order=3,order_rule=full"}
    keys |= {"lms": "lms:order=4,order_rule=full", "ipndm": "ipndm:order=4,order_rule=full"}
    run = Runner(prob.den, prob.x0, [])
    out: dict[str, Any] = {}
    print(f"\n### {prob.name}: on the shipped tuned schedules (models.digits_schedule), default -> auto\n")
    print("| sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |")
    print("|---" * (len(nfes) + 1) + "|")
    for m, key in keys.items():
        cells = []
        for n in nfes:
            s = es.models.digits_schedule(key, n).tolist()
            d = prob.metrics(run(s, plan_for(SETTINGS[0], m, s)))["fd"]
            a = prob.metrics(run(s, plan_for(SETTINGS[-1], m, s)))["fd"]
            out[f"{m}|{n}"] = (d, a)
            cells.append(f"{d:.3g} -> {a:.3g}")
        print(f"| {m} ({key}) | " + " | ".join(cells) + " |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20])
    ap.add_argument("--digits-samples", type=int, default=898)
    ap.add_argument("--mixture-samples", type=int, default=2000)
    ap.add_argument("--sweep", type=int, nargs=2, default=[4, 25], help="NFE range of the mixture robustness sweep")
    ap.add_argument("--no-digits", action="store_true", help="only the fast mixture problem")
    ap.add_argument("--no-diagnose", action="store_true")
    ap.add_argument("--scales", type=float, nargs="*", default=[0.5, 2.0], help="mixture data scales to sweep too")
    ap.add_argument("--sensitivity", action="store_true", help="the rule's thresholds varied (mixture, ~2 min)")
    ap.add_argument("--tuned", action="store_true", help="also the shipped tuned digits schedules (NFE 5, 10)")
    ap.add_argument("--margins", type=int, default=0, help="also run the proposed unit test on this many seed sets")
    ap.add_argument("--margin-samples", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)  # small batches; one thread was measured fastest on the shared CPU
    t_start = time.time()
    out: dict[str, Any] = {}

    mix = mixture_problem(args.mixture_samples)
    err = check_reimplementation(mix, args.nfe, lof_too=True)
    print(f"reimplementation vs library (mixture, float64, every method, order_rule full, auto and final, "
          f"NFE {args.nfe}): max abs difference {err:.1e}")  # fmt: skip
    out["check_mixture"] = err
    methods = list(ODE_METHODS + SDE_METHODS)
    out["mixture"] = evaluate(mix, args.nfe, SETTINGS, methods)
    print("\n## mixture64d (exact denoiser; 'fd' to the exact moments, 'rms' vs a converged ODE solution)")
    print_tables(mix.name, out["mixture"], SETTINGS, "fd", f"{args.mixture_samples} seeds")
    print_summary(mix.name, out["mixture"], "fd", methods)
    print_summary(mix.name, out["mixture"], "rms", methods)
    sweep = list(range(args.sweep[0], args.sweep[1] + 1))
    out["sweep"] = {"1": robustness_sweep(mix, sweep, methods, SETTINGS)}
    if args.sensitivity:
        out["sensitivity"] = sensitivity(mix, sweep)
    for sc in args.scales:
        out["sweep"][str(sc)] = robustness_sweep(mixture_problem(args.mixture_samples, scale=sc), sweep, ODE_METHODS)
    print(f"\n({time.time() - t_start:.0f} s so far)", flush=True)

    if not args.no_digits:
        dig = digits_problem(args.digits_samples)
        err = check_reimplementation(dig, [10], lof_too=False)
        print(
            f"\nreimplementation vs library (digits, float32, every method's defaults, NFE 10): "
            f"max abs difference {err:.1e}"
        )
        out["check_digits"] = err
        out["digits"] = evaluate(dig, args.nfe, SETTINGS, methods)
        print("\n## digits (shipped model; 'fd': classifier features vs real half A, 'fd_pix': pixels)")
        print_tables(dig.name, out["digits"], SETTINGS, "fd", f"{args.digits_samples} seeds, converged ~8.5")
        print_summary(dig.name, out["digits"], "fd", methods)
        print_summary(dig.name, out["digits"], "fd_pix", methods)
        if not args.no_diagnose:
            out["diagnose"] = diagnose(dig, 10)
        if args.tuned:
            out["tuned"] = tuned_schedules(dig, [5, 10])
        print(f"\n({time.time() - t_start:.0f} s so far)", flush=True)
    if args.margins:
        out["margins"] = margins(args.margins, args.margin_samples, args.nfe)
    finish_report(out, t_start, args.json)


if __name__ == "__main__":
    main()
