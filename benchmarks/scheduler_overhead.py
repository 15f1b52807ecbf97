"""Drop-in scheduler overhead: what does ``scheduler.step`` cost inside a pipeline's loop?

Question: in a diffusers-style loop (``scale_model_input``, the model, ``step``) with a nearly free model (it
returns a cached tensor), how long does one model call's scheduler work take with ``EDMSamplerScheduler``
(the library's program in a worker thread, one handoff per call) and with diffusers' own schedulers?
Acceptance (issue 14): ours at most diffusers' ``EulerDiscreteScheduler.step`` on the CPU at 64x4x32x32.

Per call = (the whole loop, ``set_timesteps`` and the first call's start included) / model calls, as wall
time and as the process's CPU time (all threads: what the loop costs on an idle machine, where a thread
switch is a few microseconds; on a machine with more runnable threads than cores, waking the worker of the
multistep samplers waits for a core and the wall time grows). The variants are interleaved round by round
and the median over rounds is reported, beside ``set_timesteps`` alone (its probe runs of the program) and
one elementwise pass over the state (``torch.lerp(..., out=)``), the unit every step is made of. One CPU
thread for torch by default (``--threads``).

Usage::

    python benchmarks/scheduler_overhead.py --json scheduler_overhead.json
    python benchmarks/scheduler_overhead.py --shape 64,4,32,32 --steps 50 --rounds 15
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

from _harness import finish_report

DDPM = {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}


def loop(sched: Any, steps: int, x0: torch.Tensor, out: torch.Tensor) -> Callable[[], int]:
    """One sampling run as a pipeline drives it, with a free model; returns the number of model calls."""

    def run() -> int:
        sched.set_timesteps(steps)
        x = x0 * sched.init_noise_sigma
        for t in sched.timesteps:
            inp = sched.scale_model_input(x, t)
            del inp  # the free model ignores its input
            x = sched.step(out, t, x).prev_sample
        return len(sched.timesteps)

    return run


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="64,4,32,32")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    t_start = time.time()
    torch.set_num_threads(a.threads)
    warnings.filterwarnings("ignore")
    import diffusers

    from edm_samplers import EDMSamplerScheduler

    shape = tuple(int(s) for s in a.shape.split(","))
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(shape, generator=gen)
    # A plausible eps prediction: small, so that the states stay finite over the run.
    out = 0.1 * torch.randn(shape, generator=gen)
    base = diffusers.DDPMScheduler(**DDPM)
    variants: dict[str, Any] = {
        "diffusers EulerDiscreteScheduler": diffusers.EulerDiscreteScheduler(**DDPM),
        "diffusers DPMSolverMultistepScheduler": diffusers.DPMSolverMultistepScheduler(**DDPM),
        "diffusers UniPCMultistepScheduler": diffusers.UniPCMultistepScheduler(**DDPM),
        "diffusers HeunDiscreteScheduler": diffusers.HeunDiscreteScheduler(**DDPM),
    }
    for sampler in ("euler", "dpmpp_2m", "unipc", "heun", "euler_ancestral"):
        variants[f"EDMSamplerScheduler {sampler}"] = EDMSamplerScheduler.from_config(base.config, sampler=sampler)
    runs = {k: loop(s, a.steps, x0, out) for k, s in variants.items()}
    calls = {k: r() for k, r in runs.items()}  # warm-up (and the call counts)
    per_call: dict[str, list[float]] = {k: [] for k in runs}
    cpu_call: dict[str, list[float]] = {k: [] for k in runs}
    setup: dict[str, list[float]] = {k: [] for k in runs}
    lerp: list[float] = []
    buf = torch.empty_like(x0)
    for _ in range(a.rounds):
        for k, r in runs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            r()
            per_call[k].append((time.perf_counter() - t0) / calls[k])
            cpu_call[k].append((time.process_time() - c0) / calls[k])
            t0 = time.perf_counter()
            variants[k].set_timesteps(a.steps)
            setup[k].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in range(10):
            torch.lerp(out, x0, 0.5, out=buf)
        lerp.append((time.perf_counter() - t0) / 10)
    results = {
        "shape": list(shape),
        "steps": a.steps,
        "rounds": a.rounds,
        "threads": a.threads,
        "lerp_pass_us": round(statistics.median(lerp) * 1e6, 1),
        "variants": {
            k: {
                "model_calls": calls[k],
                "per_call_us": round(statistics.median(v) * 1e6, 1),
                "per_call_cpu_us": round(statistics.median(cpu_call[k]) * 1e6, 1),
                "set_timesteps_us": round(statistics.median(setup[k]) * 1e6, 1),
            }
            for k, v in per_call.items()
        },
    }
    print(json.dumps(results, indent=1))
    finish_report(results, t_start, a.json)


if __name__ == "__main__":
    main()
