"""Graphed sampling with a real U-Net: does a sampling call cost what its network calls cost?

Question (issue 6's GPU target): with ``GraphedSampler`` on CUDA, is a whole sampling call within 5% of
the bare network time at batch 1 for a small U-Net? "Bare network time" is measured two ways, both in the
same process and interleaved round by round (the median over rounds is reported):

- ``net_graph``: the same NFE network calls (same inputs, same sigma rows) captured in one CUDA graph and
  replayed: the floor for any graphed sampler. The target is ``graphed / net_graph <= 1.05``.
- ``net_eager``: those calls from a Python loop: what a user's eager loop pays before any solver work.

Timed per (network, batch, sampler): the eager driver (``heun_sample``, ``dpmpp_2m_sample``, ...), the
``GraphedSampler`` call (input copy, noise fill from ``PerSampleNoise``, replay, output copy) and its bare
``replay()``. Networks: the shipped digits model (1.03M-parameter U-Net, 1x8x8) and a CIFAR-sized U-Net
(3x32x32, 64 channels, (1, 2, 2), attention at 16x16; random weights: speed does not depend on them).
On CPU the script runs too, but "graphed" is then the eager fallback.

Usage::

    python benchmarks/graph_unet.py --json out.json
    python benchmarks/graph_unet.py --nets digits --batches 1 --samplers heun dpmpp_2m --rounds 5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

import edm_samplers as E
from edm_samplers.models import UNet
from edm_samplers.solvers.api import sampler_function

SAMPLERS: dict[str, dict[str, Any]] = {
    "euler": {},
    "heun": {},
    "stochastic": {"s_churn": 40.0},
    "dpmpp_2m": {},
    "unipc": {"order": 3},
    "dpmpp_2m_sde": {"eta": 1.0},
    "euler_ancestral": {},
}
"""Registry names and the knobs measured."""


def network(name: str, device: torch.device) -> tuple[torch.nn.Module, tuple[int, ...]]:
    if name == "digits":
        return E.models.digits(device), (1, 8, 8)
    if name == "cifar":
        net = UNet(3, 32, model_channels=64, channel_mult=(1, 2, 2), num_blocks=2, attn_resolutions=(16,))
        return E.EDMPrecond(net, sigma_data=0.5).eval().to(device), (3, 32, 32)
    raise SystemExit(f"--nets: unknown {name!r} (digits, cifar)")


class Recorder:
    """Wraps the denoiser and keeps each call's sigma row, to replay the same calls without a solver."""

    def __init__(self, den: Callable[..., torch.Tensor]) -> None:
        self.den = den
        self.sigmas: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> torch.Tensor:
        self.sigmas.append(sigma.clone())
        return self.den(x, sigma, **cond)


def timed(fn: Callable[[], Any], device: torch.device, reps: int) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / reps


def run_case(
    den: torch.nn.Module, shape: tuple[int, ...], sampler: str, steps: int, device: torch.device, rounds: int,
    reps: int, noise_kind: str = "per_sample",
) -> dict[str, Any]:  # fmt: skip
    knobs = SAMPLERS[sampler]
    make_noise = E.CounterNoise if noise_kind == "counter" else E.PerSampleNoise
    fn = sampler_function(sampler)
    sig = E.karras_sigmas(steps)
    x = torch.randn(shape, device=device, generator=torch.Generator(device).manual_seed(0)) * float(sig[0])
    seeds = list(range(shape[0]))
    rec = Recorder(den)
    with torch.no_grad():
        fn(rec, x, sig, noise=make_noise(seeds), **knobs)
    calls = rec.sigmas

    def bare(x: torch.Tensor, cond: Mapping[str, Any], noise: Any) -> torch.Tensor:
        out = x
        for s in calls:
            out = den(x, s)
        return out

    net_graph = E.GraphedSampler.from_loop(bare, shape, device=device, check_finite=False)
    gs = E.GraphedSampler(den, sig, shape, sampler=sampler, device=device, check_finite=False, **knobs)

    def eager() -> torch.Tensor:
        return fn(den, x, sig, noise=make_noise(seeds), check_finite=False, **knobs)

    cands: dict[str, Callable[[], Any]] = {
        "net_eager": lambda: bare(x, {}, None),
        "net_graph": lambda: net_graph(x),
        "sampler_eager": eager,
        "sampler_graphed": lambda: gs(x, noise=make_noise(seeds)),
    }
    with torch.no_grad():
        for c in cands.values():  # warm-up: capture, cuDNN autotuning, allocator pools
            c()
            c()
        if gs.graphed:
            graph = gs._counter.graph if noise_kind == "counter" and gs._counter is not None else gs._graph
            assert graph is not None
            cands["replay_only"] = graph.replay
        times: dict[str, list[float]] = {k: [] for k in cands}
        for _ in range(rounds):
            for k, c in cands.items():
                times[k].append(timed(c, device, reps))
    ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    return {
        "sampler": sampler,
        "steps": steps,
        "nfe": len(calls),
        "ms": ms,
        "graphed_over_net_graph": ms["sampler_graphed"] / ms["net_graph"],
        "replay_over_net_graph": ms.get("replay_only", float("nan")) / ms["net_graph"],
        "eager_over_net_eager": ms["sampler_eager"] / ms["net_eager"],
        "eager_over_graphed": ms["sampler_eager"] / ms["sampler_graphed"],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nets", nargs="+", default=["digits", "cifar"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 64])
    p.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(SAMPLERS))
    p.add_argument("--steps", type=int, default=18)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--reps", type=int, default=3, help="calls per timing")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--noise",
        default="per_sample",
        choices=["per_sample", "counter"],
        help="the stochastic samplers' noise: PerSampleNoise (static buffers) or CounterNoise (in-graph)",
    )
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    device = torch.device(a.device)
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(f"# device {device} ({name}), torch {torch.__version__}, python {platform.python_version()}")
    report: dict[str, Any] = {"device": name, "torch": torch.__version__, "cases": []}
    for net_name in a.nets:
        den, img = network(net_name, device)
        params = sum(q.numel() for q in den.parameters())
        for b in a.batches:
            for sampler in a.samplers:
                r = run_case(den, (b, *img), sampler, a.steps, device, a.rounds, a.reps, a.noise)
                r.update(net=net_name, params=params, batch=b)
                report["cases"].append(r)
                ms = r["ms"]
                print(
                    f"# {net_name:6s} b={b:3d} {sampler:12s} nfe {r['nfe']:2d} | net eager {ms['net_eager']:7.2f} ms"
                    f"  net graph {ms['net_graph']:7.2f} | sampler eager {ms['sampler_eager']:7.2f}"
                    f"  graphed {ms['sampler_graphed']:7.2f} (replay {ms.get('replay_only', float('nan')):7.2f}) |"
                    f" graphed/net_graph {r['graphed_over_net_graph']:.3f}  eager/net_eager"
                    f" {r['eager_over_net_eager']:.3f}  eager/graphed {r['eager_over_graphed']:.1f}x",
                    flush=True,
                )
    text = json.dumps(report, indent=1)
    if a.json:
        with contextlib.suppress(OSError), open(a.json, "w") as f:
            f.write(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
