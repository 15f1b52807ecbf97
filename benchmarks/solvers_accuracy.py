"""Question: how accurate are the library's low-NFE solvers against diffusers' (and k-diffusion's) at 5-50 NFE?

Every solver integrates the same probability-flow ODE on the same exact (closed-form) denoiser, from the
same initial noise, on the same schedule (EDM's rho = 7, sigma 80 -> 0.002, then 0), at the same number of
denoiser evaluations (NFE). The error is the RMS over the batch of ||x - x_ref|| / sqrt(dim), with x_ref
the float64 adaptive Dormand-Prince solution of the ODE followed by the final step x = D(x; sigma_min) that
every sampler takes (:func:`edm_samplers.evaluation.ode_reference`): it measures discretisation error only.

diffusers' schedulers are driven in their own loop (``scheduler.step``) with ``prediction_type="sample"``:
the model returns D(x / alpha; sigma) for their VP-scaled state x = alpha x_EDM, with sigma read from the
scheduler's own sigma table, which is overwritten with our schedule so both sides step through identical
noise levels. k-diffusion's samplers are compared when the package imports (its ``sampling`` module is
loaded on its own when the package ``__init__`` fails on optional dependencies).

Run: ``python benchmarks/solvers_accuracy.py [--quick] [--json out.json]`` (CPU, float64, ~1-2 min).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import platform
import sys
import types
import warnings
from collections.abc import Callable
from typing import Any

import torch

import edm_samplers as es
from edm_samplers.evaluation import ode_reference
from edm_samplers.solvers.api import sampler_function
from edm_samplers.solvers.registry import get, parse_label

Sampler = Callable[[Any, torch.Tensor, torch.Tensor], torch.Tensor]


# ---- problems: exact denoisers ---------------------------------------------------------------------------


def problems(batch: int) -> dict[str, tuple[Any, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out: dict[str, tuple[Any, torch.Tensor]] = {}
    # 2-D mixture of 8 narrow Gaussians on a ring (multi-modal, sharp at low sigma).
    ang = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    ring = torch.stack([ang.cos(), ang.sin()], 1)
    out["gmm2d_ring"] = (
        es.evaluation.GaussianMixture(ring, 0.05),
        torch.randn(batch, 2, generator=g, dtype=torch.float64),
    )
    # 16-D mixture of 6 components with unequal widths and weights.
    means = torch.randn(6, 16, generator=g, dtype=torch.float64)
    stds = torch.rand(6, generator=g, dtype=torch.float64) * 0.4 + 0.1
    w = torch.rand(6, generator=g, dtype=torch.float64) + 0.2
    out["gmm16d"] = (
        es.evaluation.GaussianMixture(means, stds, w),
        torch.randn(batch, 16, generator=g, dtype=torch.float64),
    )
    # Empirical denoiser of 64 points in 8-D (what a perfectly fitted network converges to).
    data = torch.randn(64, 8, generator=g, dtype=torch.float64) * 0.5
    out["empirical8d"] = (
        es.evaluation.empirical_denoiser(data),
        torch.randn(batch, 8, generator=g, dtype=torch.float64),
    )
    # 3x8x8 "images": a Gaussian (closed-form ODE) with data std 0.5.
    gauss = es.evaluation.GaussianMixture(torch.zeros(1, 3, 8, 8, dtype=torch.float64), 0.5)
    out["gauss_img"] = (gauss, torch.randn(batch, 3, 8, 8, generator=g, dtype=torch.float64))
    return out


# ---- the library's solvers (NFE -> schedule) ---------------------------------------------------------------


LIBRARY = ("euler", "heun", "dpm2", "dpmpp_2m", "dpmpp_3m", "dpmpp_3m:order=4", "unipc:order=2", "unipc:order=3",
           "deis:order=2", "deis:order=3", "lms:order=4", "ipndm:order=4")  # fmt: skip
"""The library's configurations compared here, as registry labels (``name`` or ``name:knob=value``)."""


def pinned(text: str) -> tuple[str, dict[str, Any]]:
    """``parse_label(text)`` with ``order_rule="full"`` where the solver has that knob and the label leaves it
    out: the tables and the shipped tuned schedules were measured at full order (the default is now "auto")."""
    name, knobs = parse_label(text)
    if "order_rule" in get(name).knob_names:
        knobs.setdefault("order_rule", "full")
    return name, knobs


def ours() -> dict[str, tuple[Sampler, int]]:
    """label -> (sampler, NFE per step, from the registry); the last step to 0 of a 2-NFE solver costs 1.
    Multistep solvers run at ``order_rule="full"`` unless the label says otherwise (:func:`pinned`)."""
    out: dict[str, tuple[Sampler, int]] = {}
    for text in LIBRARY:
        name, knobs = pinned(text)
        spec = get(name)

        def run(d: Any, x: torch.Tensor, s: torch.Tensor, _name: str = name, _kw: Any = knobs) -> torch.Tensor:
            return sampler_function(_name)(d, x, s, **_kw)

        out[text] = (run, spec.nfe(1, False, spec.resolve(knobs)))
    return out


def steps_for(nfe: int, per_step: int) -> int:
    return nfe if per_step == 1 else (nfe + 1) // 2


# ---- diffusers, driven on the same denoiser and noise levels --------------------------------------------


def diffusers_sampler(kind: str, order: int) -> Sampler:
    import diffusers

    def run(den: Any, x: torch.Tensor, sig: torch.Tensor) -> torch.Tensor:
        n = sig.numel() - 1
        common: dict[str, Any] = {"prediction_type": "sample"}
        to_zero = kind != "deis"  # diffusers' DEIS cannot step to sigma = 0 (0 * inf): Euler to 0 below
        if kind == "dpmpp":
            sched = diffusers.DPMSolverMultistepScheduler(solver_order=order, algorithm_type="dpmsolver++", **common)
        elif kind == "unipc":
            sched = diffusers.UniPCMultistepScheduler(solver_order=order, solver_type="bh2", **common)
        elif kind == "deis":
            sched = diffusers.DEISMultistepScheduler(solver_order=order, **common)
        else:
            raise ValueError(kind)
        steps = n if to_zero else n - 1
        sched.set_timesteps(steps)
        table = sig if to_zero else sig[:-1]
        sched.sigmas = table.clone()
        sched.timesteps = torch.arange(steps - 1, -1, -1, dtype=torch.int64) * 10 + 1
        alpha0 = 1 / math.sqrt(1 + float(sig[0]) ** 2)
        sample = x * alpha0
        for i, t in enumerate(sched.timesteps):
            s = float(table[i])
            alpha = 1 / math.sqrt(1 + s**2)
            d = den(sample / alpha, torch.full((x.shape[0],), s, dtype=x.dtype))
            sample = sched.step(d, t, sample).prev_sample
        if not to_zero:  # the shared final step: x = D(x; sigma_min), 1 NFE
            s = float(table[-1])
            sample = den(sample * math.sqrt(1 + s**2), torch.full((x.shape[0],), s, dtype=x.dtype))
        return sample

    return run


def peers_diffusers() -> dict[str, Sampler]:
    try:
        importlib.import_module("diffusers")
    except ImportError:
        return {}
    return {
        "diffusers_dpmpp2m": diffusers_sampler("dpmpp", 2),
        "diffusers_dpmpp3m": diffusers_sampler("dpmpp", 3),
        "diffusers_unipc2": diffusers_sampler("unipc", 2),
        "diffusers_unipc3": diffusers_sampler("unipc", 3),
        "diffusers_deis2": diffusers_sampler("deis", 2),
        "diffusers_deis3": diffusers_sampler("deis", 3),
    }


def kdiffusion_sampling() -> Any:
    """k_diffusion.sampling, also when the package __init__ fails on optional dependencies; else None."""
    try:
        return importlib.import_module("k_diffusion.sampling")
    except Exception:
        pass
    try:
        spec = importlib.util.find_spec("k_diffusion")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for k in [m for m in sys.modules if m == "k_diffusion" or m.startswith("k_diffusion.")]:
        del sys.modules[k]
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["k_diffusion"] = pkg
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module("k_diffusion.sampling")
    except Exception:
        del sys.modules["k_diffusion"]
        return None


def peers_kdiffusion() -> dict[str, tuple[Sampler, int]]:
    ks = kdiffusion_sampling()
    if ks is None:
        return {}

    def wrap(f: Any, **kw: Any) -> Sampler:
        return lambda d, x, s: f(d, x, s, disable=True, **kw)

    return {
        "kdiff_dpmpp_2m": (wrap(ks.sample_dpmpp_2m), 1),
        "kdiff_dpmpp_3m_sde_eta0": (wrap(ks.sample_dpmpp_3m_sde, eta=0.0), 1),
        "kdiff_lms": (wrap(ks.sample_lms), 1),
        "kdiff_heun": (wrap(ks.sample_heun), 2),
        "kdiff_dpm_2": (wrap(ks.sample_dpm_2), 2),
    }


# ---- measurement ---------------------------------------------------------------------------------------


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    d = (a - b).reshape(a.shape[0], -1)
    return float(((d**2).mean(1)).mean().sqrt())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="NFE 5 and 10 only, smaller batch")
    ap.add_argument("--json", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(2)
    nfes = [5, 10] if args.quick else [5, 6, 8, 10, 12, 15, 20, 30, 50]
    batch = 32 if args.quick else 64
    solvers: dict[str, tuple[Sampler, int]] = dict(ours())
    lib_names = set(solvers)
    solvers.update({k: (v, 1) for k, v in peers_diffusers().items()})
    solvers.update(peers_kdiffusion())
    results: dict[str, dict[str, dict[int, float]]] = {}
    for pname, (den, z) in problems(batch).items():
        sig_max, sig_min = 80.0, 0.002
        x0 = z * sig_max
        ref = ode_reference(den, x0, [sig_max, sig_min, 0.0])
        table: dict[str, dict[int, float]] = {}
        for name, (f, per) in solvers.items():
            row: dict[int, float] = {}
            for nfe in nfes:
                sig = es.karras_sigmas(steps_for(nfe, per), sig_min, sig_max)
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        out = f(den, x0.clone(), sig)
                    e = rms(out.double(), ref)
                except Exception:
                    e = float("nan")
                row[nfe] = e if math.isfinite(e) else float("inf")
            table[name] = row
        results[pname] = table
        print(f"\n## {pname}  (RMS error vs. reference; karras rho=7, 80 -> 0.002 -> 0)")
        print("| solver | " + " | ".join(f"NFE {n}" for n in nfes) + " |")
        print("|---|" + "---|" * len(nfes))
        for name, row in table.items():
            mark = "" if name in lib_names else " (peer)"
            print(f"| {name}{mark} | " + " | ".join(f"{row[n]:.2e}" for n in nfes) + " |")
        for n in (5, 10):
            if n not in nfes:
                continue
            best_lib = min((r[n], k) for k, r in table.items() if k in lib_names)
            peers = [(r[n], k) for k, r in table.items() if k not in lib_names]
            best_peer = min(peers) if peers else (float("nan"), "-")
            euler5 = table["euler"][n]
            print(
                f"NFE {n}: best library {best_lib[1]} {best_lib[0]:.2e}; best peer {best_peer[1]} {best_peer[0]:.2e}; "
                f"ratio {best_lib[0] / best_peer[0]:.2f}; library solvers above Euler: "
                f"{[k for k in lib_names if table[k][n] > euler5]}"
            )
    meta = {"torch": torch.__version__, "python": platform.python_version(), "device": "cpu", "dtype": "float64"}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "results": results}, fh, indent=1)
    print("\n" + json.dumps(meta))


if __name__ == "__main__":
    main()
