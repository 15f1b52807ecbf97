"""Batched classifier-free guidance: what does one network call of batch 2B save over two calls of batch B?

Timed per guided evaluation (``guided(den, den, w, guide_cond=null)(x, sigma, **cond)`` under
``torch.no_grad()``), batched (the default: one call of batch 2B) against ``batched=False`` (two calls of
batch B), interleaved round by round; the median over rounds is reported with the ratio two-call / batched
(> 1: batching is faster). Networks: the shipped digits model (1.03M-parameter U-Net, 1x8x8, unconditional:
the guide call repeats the condition, which times the batching alone) and, when diffusers is installed, a
class-conditional ``UNet2DModel`` (3x32x32, channels (32, 64, 64), 10 classes, null class 10; random weights:
speed does not depend on them). Batch sizes 1, 8, 64 by default. On CUDA each timing synchronises.

Usage::

    python benchmarks/guidance_batch.py --json guidance_batch.json
    python benchmarks/guidance_batch.py --nets digits --batches 1 8 --rounds 5
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

import edm_samplers as es

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import finish_report


def class_unet(device: torch.device) -> tuple[Any, Callable[[int], dict[str, Any]], Callable[[int], dict[str, Any]]]:
    import diffusers

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=32, in_channels=3, out_channels=3, block_out_channels=(32, 64, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), num_class_embeds=11,
    ).eval().to(device)  # fmt: skip
    den = es.from_diffusers(unet, diffusers.DDPMScheduler())

    def cond(b: int) -> dict[str, Any]:
        return {"class_labels": torch.arange(b, device=device) % 10}

    def null(b: int) -> dict[str, Any]:
        return es.null_condition(den, cond(b), null_class=10)

    return den, cond, null


def digits(device: torch.device) -> tuple[Any, Callable[[int], dict[str, Any]], Callable[[int], dict[str, Any]]]:
    return es.models.digits(device), lambda b: {}, lambda b: {}


NETS = {"digits": ((1, 8, 8), digits), "unet32_class": ((3, 32, 32), class_unet)}


def timed(g: Any, x: torch.Tensor, sigma: torch.Tensor, cond: dict[str, Any], reps: int) -> float:
    """Seconds per guided evaluation, averaged over ``reps`` calls (synchronised on CUDA)."""
    if x.is_cuda:
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        g(x, sigma, **cond)
    if x.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8, 64])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--reps", type=int, default=3, help="guided evaluations per timing")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    t0 = time.time()
    results = []
    for name in args.nets:
        shape, build = NETS[name]
        try:
            den, cond_of, null_of = build(device)
        except ImportError as e:
            print(f"{name}: skipped ({e})")
            continue
        for b in args.batches:
            x = torch.randn(b, *shape, device=device)
            sigma = torch.full((b,), 2.0, device=device)
            cond = cond_of(b)
            variants = {
                "batched": es.guided(den, den, 3.0, guide_cond=null_of(b)),
                "two_calls": es.guided(den, den, 3.0, guide_cond=null_of(b), batched=False),
            }
            times: dict[str, list[float]] = {k: [] for k in variants}
            with torch.no_grad():
                for g in variants.values():  # warm-up
                    g(x, sigma, **cond)
                for _ in range(args.rounds):
                    for k, g in variants.items():
                        times[k].append(timed(g, x, sigma, cond, args.reps))
            med = {k: statistics.median(v) for k, v in times.items()}
            row = {
                "net": name, "batch": b, "batched_ms": 1e3 * med["batched"], "two_calls_ms": 1e3 * med["two_calls"],
                "ratio_two_over_batched": med["two_calls"] / med["batched"],
            }  # fmt: skip
            results.append(row)
            print(
                f"{name:14s} B={b:3d}  batched {row['batched_ms']:8.2f} ms  two calls {row['two_calls_ms']:8.2f} ms  "
                f"ratio {row['ratio_two_over_batched']:.2f}",
                flush=True,
            )
    finish_report({"device": str(device), "rows": results}, t0, args.json)


if __name__ == "__main__":
    main()
