"""Question: at 5 and 10 NFE, how close do the library's solvers get to the converged sampler on the
shipped digits model, and where do the peers stand?

Two phases:

``--tune`` searches, for each library solver and NFE budget, the schedule that minimises the global error
against a converged solution (Heun, 128 steps) on a *calibration* batch of 64 seeds (100000..100063, never
used for evaluation), with :func:`edm_samplers.schedule_opt.optimize_schedule`, and writes the schedules to
``src/edm_samplers/models/digits_schedules.json`` (shipped; read with ``edm_samplers.models.digits_schedule``).

The evaluation (always) follows ``examples/evaluate_digits.py``: 898 digits from seeds 0..897, clipped to
[-1, 1], Frechet distance in the shipped classifier's features against real half A (899 images); the
converged value is Heun with 128 steps (255 NFE). It compares the library's solvers on EDM's rho = 7
schedule and on their tuned schedules with diffusers' and (when importable) k-diffusion's solvers on rho = 7
and log-linear schedules, all in one run from the same initial noise.

Run: ``python benchmarks/digits_low_nfe.py [--tune] [--nfe 5 10] [--json out.json]`` (CPU; minutes).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any, cast

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import contextlib

import edm_samplers as es
import solvers_accuracy as sa
from _harness import finish_report
from edm_samplers.models import digits, digits_features
from edm_samplers.models.digits import load_digits_images
from edm_samplers.models.schedules import SCHEDULES_FILE
from edm_samplers.schedule_opt import optimize_schedule
from edm_samplers.solvers.registry import label

SIG_MAX, SIG_MIN = 80.0, 0.002
TUNED = ["euler", "heun", "dpmpp_2m", "dpmpp_3m", "unipc:order=3", "deis:order=3", "ipndm:order=4", "lms:order=4"]
"""Registry labels; the shipped schedules are keyed by the full label (every knob, defaults resolved)."""


def key(text: str) -> str:
    return label(*sa.pinned(text), full=True)


def latents(seeds: range) -> torch.Tensor:
    return es.PerSampleNoise(seeds).randn((len(seeds), 1, 8, 8), dtype=torch.float32, device=torch.device("cpu"))


def run(f: Any, den: Any, x0: torch.Tensor, sig: torch.Tensor, chunk: int = 300) -> torch.Tensor:
    outs = []
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for xs in torch.split(x0, chunk):
            outs.append(f(den, xs.clone(), sig))
    return torch.cat(outs).float()


def tune(den: Any, nfes: list[int], max_evals: int) -> dict[str, dict[str, list[float]]]:
    lib = sa.ours()
    xc = latents(range(100_000, 100_064)) * SIG_MAX
    with torch.no_grad():
        ref = es.heun_sample(den, xc, es.karras_sigmas(128, SIG_MIN, SIG_MAX))
    out: dict[str, dict[str, list[float]]] = {}
    for name in TUNED:
        f, per = lib[name]
        for nfe in nfes:
            n = sa.steps_for(nfe, per)
            if n < 2:
                continue
            t0 = time.time()
            r = optimize_schedule(
                den,
                xc,
                n,
                sampler=lambda d, x, s, f=f, **kw: f(d, x, s),
                reference=ref,
                init=es.karras_sigmas(n, SIG_MIN, SIG_MAX),
                max_evals=max_evals,
            )
            out.setdefault(key(name), {})[str(nfe)] = [round(v, 7) for v in r.sigmas.tolist()]
            print(
                f"tuned {name} NFE {nfe}: mse {r.initial_error:.3e} -> {r.error:.3e} "
                f"({r.evaluations} runs, {time.time() - t0:.0f} s)",
                flush=True,
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tune", action="store_true", help="re-tune and rewrite the shipped schedules first")
    ap.add_argument("--nfe", type=int, nargs="+", default=[5, 10])
    ap.add_argument("--max-evals", type=int, default=120)
    ap.add_argument("--samples", type=int, default=898)
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    # One thread: the batches are small, and on a loaded 2-core machine 2-thread kernels were measured far slower.
    torch.set_num_threads(args.threads)
    t_start = time.time()
    den = digits()
    if args.tune:
        schedules = tune(den, args.nfe, args.max_evals)
        old = json.loads(SCHEDULES_FILE.read_text()) if SCHEDULES_FILE.is_file() else {"schedules": {}}
        merged = old.get("schedules", {})
        for k, v in schedules.items():
            merged.setdefault(k, {}).update(v)
        meta = {
            "model": "edm_samplers.models.digits()",
            "objective": "mean squared error vs Heun 128 steps on 64 calibration seeds 100000..100063",
            "search": f"optimize_schedule(max_evals={args.max_evals}, init=karras_sigmas(n, 0.002, 80))",
            "command": "python " + " ".join(sys.argv),
            "torch": torch.__version__,
        }
        SCHEDULES_FILE.write_text(json.dumps({"meta": meta, "schedules": merged}, indent=1) + "\n")

    real = cast(torch.Tensor, load_digits_images())
    perm = torch.randperm(real.shape[0], generator=torch.Generator().manual_seed(0))
    feats_a = digits_features(real[perm[:899]])
    feats_b = digits_features(real[perm[899:]])
    real_fd = es.evaluation.frechet_distance(feats_b, feats_a)
    x0 = latents(range(args.samples)) * SIG_MAX

    def fd(images: torch.Tensor) -> float:
        v = es.evaluation.frechet_distance(digits_features(images.clamp(-1, 1)), feats_a)
        return v if math.isfinite(v) else float("inf")

    t0 = time.time()
    converged = fd(run(es.heun_sample, den, x0, es.karras_sigmas(128, SIG_MIN, SIG_MAX)))
    print(f"converged (Heun 255 NFE): FD {converged:.3f}; real B vs A {real_fd:.3f} ({time.time() - t0:.0f} s)")
    lib = sa.ours()
    peers: dict[str, tuple[Any, int]] = {}
    if not args.no_peers:
        peers = {k: (v, 1) for k, v in sa.peers_diffusers().items()}
        peers.update(sa.peers_kdiffusion())
    results: dict[str, Any] = {"converged": converged, "real_b_vs_a": real_fd, "rows": {}}
    for nfe in args.nfe:
        rows: dict[str, dict[str, float]] = {}
        for name, (f, per) in lib.items():
            if name not in TUNED:
                continue
            n = sa.steps_for(nfe, per)
            row = {"rho7": fd(run(f, den, x0, es.karras_sigmas(n, SIG_MIN, SIG_MAX)))}
            with contextlib.suppress(KeyError):
                row["tuned"] = fd(run(f, den, x0, es.models.digits_schedule(key(name), nfe)))
            rows[name] = row
        for name, (f, per) in peers.items():
            n = sa.steps_for(nfe, per)
            rows[name + " (peer)"] = {
                "rho7": fd(run(f, den, x0, es.karras_sigmas(n, SIG_MIN, SIG_MAX))),
                "loglinear": fd(run(f, den, x0, es.loglinear_sigmas(n, SIG_MIN, SIG_MAX))),
            }
        results["rows"][str(nfe)] = rows
        print(f"\n## NFE {nfe} (Frechet distance, classifier features; converged {converged:.3f})")
        print("| solver | rho=7 | tuned | log-linear | best / converged |")
        print("|---|---|---|---|---|")
        for name, row in rows.items():
            best = min(row.values())
            cells = [f"{row[k]:.3f}" if k in row else "" for k in ("rho7", "tuned", "loglinear")]
            print(f"| {name} | " + " | ".join(cells) + f" | {best / converged:.2f}x |")
    finish_report(results, t_start, args.json)


if __name__ == "__main__":
    main()
