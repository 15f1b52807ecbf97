"""What does batch-invariant (seed-based) noise cost a stochastic sampler? (issue 15)

The CPU scenario of the issue: a 64 x 3 x 32 x 32 batch, a nearly free network (it returns a cached tensor, so
a loop's time is its own), ``karras_sigmas(20)`` (20 steps), EDM's churn settings (S_churn 40, S_tmin 0.05,
S_tmax 50, S_noise 1.003: 14 of the 20 steps churn), Heun. Every variant runs interleaved in the same rounds
(median of ``--rounds``), so the ratios below come from one run:

- ``generate_counter / generator``: ``generate(..., sampler="stochastic")`` (per-seed latents, counter noise
  on the 14 churning steps) over the same sampler fed by one ``torch.Generator`` (latents included, one draw
  per step as a stream). Target <= 1.10.
- ``stochastic_s0_counter / heun`` and ``generate_s0 / generate_heun``: zero churn costs what Heun costs.
  Target <= 1.05.
- per draw: ``CounterNoise.randn_at`` vs ``torch.randn`` with a generator vs ``PerSampleNoise`` (one generator
  and one kernel per row); the SDE and ancestral samplers with a generator vs counter noise.

    python benchmarks/noise_cost.py --json noise_cost.json
    python benchmarks/noise_cost.py --device cuda          # the same on a GPU (eager; graphs: graph_unet.py)

Results: docs/benchmarks.md, section "Noise cost".
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import edm_samplers as E
from _harness import finish_report

EDM_CHURN = {"s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.003}


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="64,3,32,32")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=25)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    t_start = time.time()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    shape = tuple(int(v) for v in a.shape.split(","))
    seeds = list(range(shape[0]))
    sig = E.karras_sigmas(a.steps)
    churning = sum(1 for s in sig[:-1].tolist() if EDM_CHURN["s_tmin"] <= s <= EDM_CHURN["s_tmax"])
    cached = torch.randn(shape, device=dev, generator=torch.Generator(dev).manual_seed(1)) * 0.5

    def free(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        del x, sigma
        return cached

    def with_generator(**knobs: Any) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            gen = torch.Generator(dev).manual_seed(0)
            x = torch.randn(shape, generator=gen, device=dev) * float(sig[0])
            return E.stochastic_sample(free, x, sig, noise=gen, **knobs)

        return run

    x0 = torch.randn(shape, device=dev) * float(sig[0])
    compiled = E.CounterNoise(seeds, compile=True)  # inductor: compiled at the first draw (warm-up)
    f32 = {"dtype": torch.float32, "device": dev}
    try:
        same_bits: bool | None = all(
            torch.equal(compiled.randn_at(d, shape, **f32), E.CounterNoise(seeds).randn_at(d, shape, **f32))
            for d in (0, 9)
        )
    except Exception as e:  # no C++ compiler / triton: report and time the eager variants only
        print(f"# CounterNoise(compile=True) unavailable: {type(e).__name__}: {str(e)[:200]}")
        same_bits = None
    print(f"# CounterNoise(compile=True) gives the eager bits: {same_bits}")
    # fmt: off
    cands: dict[str, Callable[[], Any]] = {
        "heun": lambda: E.heun_sample(free, x0, sig),
        "generator": with_generator(**EDM_CHURN),
        "generate_counter": lambda: E.generate(free, seeds, shape[1:], sig, sampler="stochastic", device=dev,
                                               **EDM_CHURN),
        "generate_per_sample": lambda: E.generate(free, seeds, shape[1:], sig, sampler="stochastic", device=dev,
                                                  noise="per_sample", **EDM_CHURN),
        "stochastic_counter": lambda: E.stochastic_sample(free, x0, sig, noise=E.CounterNoise(seeds), **EDM_CHURN),
        "stochastic_s0_counter": lambda: E.stochastic_sample(free, x0, sig, noise=E.CounterNoise(seeds)),
        "stochastic_s0_generator": with_generator(s_churn=0.0),
        "generate_heun": lambda: E.generate(free, seeds, shape[1:], sig, sampler="heun", device=dev),
        "generate_s0": lambda: E.generate(free, seeds, shape[1:], sig, sampler="stochastic", device=dev),
        "sde_generator": lambda: E.dpmpp_2m_sde_sample(free, x0, sig, noise=torch.Generator(dev)),
        "sde_counter": lambda: E.dpmpp_2m_sde_sample(free, x0, sig, noise=E.CounterNoise(seeds)),
        "ancestral_generator": lambda: E.euler_ancestral_sample(free, x0, sig, noise=torch.Generator(dev)),
        "ancestral_counter": lambda: E.euler_ancestral_sample(free, x0, sig, noise=E.CounterNoise(seeds)),
    }
    # fmt: on
    gen = torch.Generator(dev).manual_seed(0)
    counter = E.CounterNoise(seeds)
    per_sample = E.PerSampleNoise(seeds)
    draws: dict[str, Callable[[], Any]] = {
        "randn_generator": lambda: torch.randn(shape, generator=gen, **f32),
        "counter_randn_at": lambda: counter.randn_at(7, shape, **f32),
        "per_sample_randn": lambda: per_sample.randn(shape, **f32),
    }
    if same_bits is not None:
        cands["stochastic_counter_compiled"] = lambda: E.stochastic_sample(free, x0, sig, noise=compiled, **EDM_CHURN)
        draws["counter_compiled_randn_at"] = lambda: compiled.randn_at(7, shape, **f32)
    everything = {**cands, **{f"draw_{k}": v for k, v in draws.items()}}
    with torch.no_grad():
        for c in everything.values():
            c()
            c()
        times: dict[str, list[float]] = {k: [] for k in everything}
        for _ in range(a.rounds):
            for k, c in everything.items():
                times[k].append(timed(c, dev))
    ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    ratios = {
        "generate_counter / generator (target <= 1.10)": ms["generate_counter"] / ms["generator"],
        "generate_per_sample / generator (before issue 15)": ms["generate_per_sample"] / ms["generator"],
        "stochastic_s0_counter / heun (target <= 1.05)": ms["stochastic_s0_counter"] / ms["heun"],
        "stochastic_s0_generator / heun": ms["stochastic_s0_generator"] / ms["heun"],
        "generate_s0 / generate_heun (target <= 1.05)": ms["generate_s0"] / ms["generate_heun"],
        "stochastic_counter / generator": ms["stochastic_counter"] / ms["generator"],
        "sde_counter / sde_generator": ms["sde_counter"] / ms["sde_generator"],
        "ancestral_counter / ancestral_generator": ms["ancestral_counter"] / ms["ancestral_generator"],
        "draw: counter / randn": ms["draw_counter_randn_at"] / ms["draw_randn_generator"],
        "draw: per_sample / randn": ms["draw_per_sample_randn"] / ms["draw_randn_generator"],
    }
    if same_bits is not None:
        ratios["stochastic_counter_compiled / generator"] = ms["stochastic_counter_compiled"] / ms["generator"]
        ratios["draw: counter compiled / randn"] = ms["draw_counter_compiled_randn_at"] / ms["draw_randn_generator"]
    print(f"# {shape}, {a.steps} steps ({churning} churn), {a.device}, threads {torch.get_num_threads()}, "
          f"median of {a.rounds} interleaved rounds")  # fmt: skip
    for k, v in ms.items():
        print(f"{k:28s} {v:9.3f} ms")
    for k, v in ratios.items():
        print(f"{k:52s} {v:6.3f}")
    results = {"shape": shape, "steps": a.steps, "churn_steps": churning, "ms": ms, "ratios": ratios,
               "threads": torch.get_num_threads(), "compiled_same_bits": same_bits}  # fmt: skip
    finish_report(results, t_start, a.json)


if __name__ == "__main__":
    main()
