"""``edm-samplers demo``: the shipped digits model in one command (a PNG grid and an NFE-vs-quality table), or,
without its weights, a closed-form Gaussian mixture against its exact ODE solution. Private."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import __version__
from ._cli_tools import emit, sample_chunks, save_grid
from ._named import PROBLEMS, make_sigmas
from .models.schedules import digits_schedule, digits_schedules
from .solvers import generate
from .solvers.registry import get, label

__all__ = ["add_demo"]

SHOWN = ("euler", "heun", "dpmpp_2m")
# The library's low-NFE answer: a 3rd-order solver on the schedule tuned for this model.
TUNED: tuple[str, dict[str, Any]] = ("unipc", {"order": 3, "order_rule": "full"})


def add_demo(sub: Any) -> None:
    d = sub.add_parser("demo", help="sample the shipped model, write a PNG grid, print an NFE-vs-quality table")
    d.add_argument("--samples", type=int, default=64, help="seeds for the grid and the quality table")
    d.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20], help="NFE budgets")
    d.add_argument("--out", default="edm_samplers_demo.png", help="image grid path")
    d.add_argument("--json", action="store_true", help="print JSON instead of a table")
    d.set_defaults(func=demo)


def demo(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    # The demo's batches are small (64 x 1x8x8): one thread is as fast on an idle 2-core machine, and on a
    # busy one torch 2.13's 2-thread CPU kernels were measured 10x slower than 1 thread (OpenMP contention).
    torch.set_num_threads(1)
    try:
        problem = PROBLEMS["digits-model"]()
    except FileNotFoundError:
        return _demo_analytic(args, t0)
    seeds = list(range(args.samples))
    cpu = torch.device("cpu")

    def run(sampler: str, knobs: dict[str, Any], sig: Tensor) -> Tensor:
        return torch.cat([c for _, c in sample_chunks(problem, cpu, seeds, sig, 256, sampler, knobs)])

    # Reference: the same seeds through the nearly converged ODE (Heun, 64 steps = 127 NFE); also the grid.
    ref = run("heun", {}, make_sigmas("karras", 64))
    feats_ref = problem.features(ref)
    rows = []

    def row(name: str, sampler: str, knobs: dict[str, Any], sig: Tensor) -> None:
        from .evaluation import frechet_distance

        out = run(sampler, knobs, sig)
        flat = (out - ref).reshape(len(seeds), -1)
        err = float(flat.norm(dim=1).mean() / ref.reshape(len(seeds), -1).norm(dim=1).mean())
        fd = frechet_distance(problem.features(out), feats_ref)
        rows.append({"sampler": name, "steps": sig.numel() - 1, "nfe": get(sampler).count(sig, knobs),
                     "rel_error": err, "frechet_to_converged": fd})  # fmt: skip

    tuned = label(*TUNED, full=True)
    for nfe in args.nfe:
        for name in SHOWN:
            steps = get(name).steps_for(nfe)
            if steps:
                row(name, name, {}, make_sigmas("karras", steps))
        if nfe in digits_schedules().get(tuned, []):
            row(f"{label(*TUNED)} tuned", TUNED[0], TUNED[1], digits_schedule(TUNED[0], nfe, **TUNED[1]))
    png = Path(args.out)
    save_grid(ref[:64], png, scale=6)
    payload = {"model": "digits", "samples": args.samples, "png": str(png), "rows": rows,
               "seconds": time.perf_counter() - t0}  # fmt: skip
    w = max([len("sampler"), *(len(str(r["sampler"])) for r in rows)]) + 2  # labels such as "unipc:order=3,..."
    lines = [
        f"edm_samplers {__version__}: shipped digits model, {args.samples} seeds; image grid -> {png}",
        "quality vs the converged ODE solution of the same seeds (Heun, 127 NFE); rho=7 schedules unless tuned:",
        f"{'sampler':<{w}}{'steps':>6}{'NFE':>5}{'rel. error':>12}{'Frechet (features)':>20}",
    ]
    lines += [
        f"{r['sampler']:<{w}}{r['steps']:>6}{r['nfe']:>5}{r['rel_error']:>12.3e}{r['frechet_to_converged']:>20.3e}"
        for r in rows
    ]
    lines.append(f"({payload['seconds']:.1f} s)")
    emit(args, payload, "\n".join(lines))
    return 0


def _demo_analytic(args: argparse.Namespace, t0: float) -> int:
    """Fallback demo on a 16-D Gaussian mixture (exact denoiser) when the digits weights are absent."""
    from .evaluation import GaussianMixture, ode_reference
    from .noise import PerSampleNoise

    g = torch.Generator().manual_seed(0)
    gm = GaussianMixture(torch.randn(8, 16, generator=g, dtype=torch.float64),
                         0.05 + 0.2 * torch.rand(8, generator=g, dtype=torch.float64))  # fmt: skip
    seeds = list(range(args.samples))
    x0 = PerSampleNoise(seeds).randn((len(seeds), 16), dtype=torch.float64, device=torch.device("cpu")) * 80.0
    ref = ode_reference(gm, x0, make_sigmas("karras", 4), rtol=1e-9, atol=1e-9)
    rows = []
    for nfe in args.nfe:
        for name in (*SHOWN, "unipc"):
            steps = get(name).steps_for(nfe)
            if not steps:
                continue
            sig = make_sigmas("karras", steps)
            out = generate(gm, seeds, (16,), sig, sampler=name, dtype=torch.float64)
            err = float((out - ref).norm(dim=1).mean() / ref.norm(dim=1).mean())
            rows.append({"sampler": name, "steps": steps, "nfe": get(name).count(sig), "rel_error": err})
    payload = {"model": "gaussian-mixture-16d", "rows": rows, "seconds": time.perf_counter() - t0}
    lines = [
        f"edm_samplers {__version__}: digits weights not found; {args.samples} samples of a 16-D Gaussian "
        "mixture (exact denoiser); error vs the exact ODE solution (Dormand-Prince reference)",
        f"{'sampler':<10}{'steps':>6}{'NFE':>5}{'rel. error':>12}",
    ]
    lines += [f"{r['sampler']:<10}{r['steps']:>6}{r['nfe']:>5}{r['rel_error']:>12.3e}" for r in rows]
    lines.append(f"({payload['seconds']:.1f} s)")
    emit(args, payload, "\n".join(lines))
    return 0
