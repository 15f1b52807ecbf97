"""Command line: ``edm-samplers <command>`` (also ``python -m edm_samplers``).

Commands:
    demo      sample the shipped digits model (or, without its weights, a closed-form Gaussian mixture),
              write an image grid PNG and print an NFE-vs-quality table.
    generate  seeds -> PNG grid and/or .npz, with any sampler of the registry and any schedule.
    fid       Inception-v3 FID (torch-fidelity's network, local weights only) of a folder of images or of
              images generated on the fly from a model, against a folder or a mu/sigma .npz file.

Models (--model): digits (shipped), ring2d / mixture64d (closed-form mixtures), digits-empirical, or
diffusers:PATH (a local diffusers UNet2DModel checkpoint with its scheduler config, wrapped by
edm_samplers.from_diffusers). Samplers (--sampler): every registry name; knobs as --opt key=value, parsed
by each knob's type (--opt order=3 order_rule=full). Samples come from edm_samplers.generate, so a
seed gives the same sample here and in Python.

``generate`` and ``fid`` also run under ``torchrun --nproc_per_node=K``: seeds are split into fixed chunks
dealt across ranks, every sample depends only on its seed, statistics are summed exactly across ranks
(float64) and only rank 0 writes. Add ``--json`` for machine-readable output. The NFE sweeps of the
benchmarks are ``python benchmarks/bench.py`` in a source checkout.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import __version__
from . import _fid as F
from ._cli_tools import DIFFUSERS, Bar, device_for, emit, model, sample_chunks, sampler_setup, save_grid, schedule_for
from ._demo import add_demo
from ._dist import cpu_group, dist_info, init_distributed, iter_chunks, shard_chunks
from ._named import PROBLEMS, SCHEDULES
from .evaluation import FeatureStats, frechet_distance_from_stats, load_stats
from .solvers import generate
from .solvers.registry import REGISTRY, count_nfe

# ---- helpers -------------------------------------------------------------------------------------


def _parse_seeds(text: str) -> list[int]:
    """'0-63', '1,5,9' or '0-9,20-29' -> list of ints."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            lo, hi = int(a), int(b)
            if hi < lo:
                raise argparse.ArgumentTypeError(f"seed range {part!r} is empty; write low-high")
            out.extend(range(lo, hi + 1))
        else:
            out.append(int(part))
    if not out or any(s < 0 for s in out):
        raise argparse.ArgumentTypeError(f"seeds must be non-negative ints like 0-63 or 1,2,3; got {text!r}")
    return out


# ---- generate ------------------------------------------------------------------------------------


def _generate(args: argparse.Namespace) -> int:
    init_distributed()
    rank, world = dist_info()
    is_diffusers = args.model.startswith(DIFFUSERS)
    if is_diffusers and args.stats:
        raise SystemExit("--stats: for a diffusers model use edm-samplers fid --model ... --save-stats (Inception)")
    problem, is_image, device = model(args.model, device_for(args.device) if is_diffusers else None)
    sampler, knobs = sampler_setup(args.sampler, args.opt)
    sigmas = schedule_for(args, problem)
    nfe = count_nfe(sigmas, sampler, **knobs)
    seeds = args.seeds
    t0 = time.perf_counter()
    parts = sample_chunks(problem, device, seeds, sigmas, args.batch, sampler, knobs, args.progress and rank == 0)
    # Every rank needs the features' width even if it got no chunk: it is fixed per model.
    feats_dim = 1 if is_diffusers else problem.features(torch.zeros(2, *problem.shape, dtype=problem.dtype)).shape[1]
    stats = FeatureStats(feats_dim)
    if not is_diffusers:  # a diffusers model's statistics live in Inception space: edm-samplers fid
        for _, s in parts:
            stats.update(problem.features(s))
    stats.all_reduce(group=cpu_group())
    # Ranks send nothing but statistics, so each rank writes its own shard file when several ranks run.
    written = []
    if args.out:
        out = Path(args.out)
        samples = torch.cat([s for _, s in parts]) if parts else torch.zeros(0, *problem.shape)
        my_seeds = [seeds[a + i] for a, s in parts for i in range(s.shape[0])]
        target = out if world == 1 else out.with_name(f"{out.stem}.rank{rank}{out.suffix}")
        if target.suffix == ".npz":
            import numpy as np

            target.parent.mkdir(parents=True, exist_ok=True)
            np.savez(target, samples=samples.to(torch.float32).numpy(), seeds=np.asarray(my_seeds, dtype=np.int64))
        elif is_image and target.suffix == ".png":
            save_grid(samples, target)
        else:
            raise SystemExit("--out must end in .npz, or .png for image models")
        written.append(str(target))
    num = len(seeds) if is_diffusers else stats.n  # every seed is sampled by exactly one rank
    mu, cov = stats.mean_cov() if stats.n >= 2 else (None, None)
    if args.stats and rank == 0 and stats.n >= 2:
        stats.save(args.stats)
    payload = {
        "model": args.model, "sampler": sampler, "knobs": knobs, "schedule": args.schedule, "steps": args.steps,
        "nfe_per_sample": nfe, "num_samples": num, "world_size": world, "files": written,
        "stats_file": args.stats, "feature_mean_norm": None if mu is None else float(mu.norm()),
        "feature_cov_trace": None if cov is None else float(cov.trace()), "seconds": time.perf_counter() - t0,
    }  # fmt: skip
    text = (f"{num} samples ({sampler}, {args.schedule}, {args.steps} steps, {nfe} NFE) on {world} "
            f"process(es) in {payload['seconds']:.1f} s; wrote {', '.join(written) or 'nothing'}")  # fmt: skip
    emit(args, payload, text)
    return 0


# ---- fid -----------------------------------------------------------------------------------------


def _stats_of_batches(batches: Any, feats: F.FeatureFn, num_chunks: int, progress: bool, desc: str,
                      probe: Any) -> FeatureStats:  # fmt: skip
    """FeatureStats of this rank's uint8 image batches, all-reduced over ranks (exact float64 sums).

    ``probe()`` gives one batch whose features fix the width on a rank that got no batch.
    """
    stats: FeatureStats | None = None
    bar = Bar(num_chunks, progress, desc)
    for u8 in batches:
        f = feats(u8)
        if stats is None:
            stats = FeatureStats(f.shape[1])
        stats.update(f)
        bar.update()
    bar.close()
    if stats is None:
        stats = FeatureStats(feats(probe()).shape[1])
    return stats.all_reduce(group=cpu_group())


def _folder_stats(folder: str, batch: int, feats: F.FeatureFn, progress: bool) -> FeatureStats:
    """Statistics of every image under ``folder``: fixed chunks of the sorted file list, dealt across ranks."""
    files = F.list_images(folder)
    chunks = shard_chunks(len(files), batch)
    return _stats_of_batches((F.read_images(files[a:b]) for a, b in chunks), feats, len(chunks), progress,
                             Path(folder).name, lambda: F.read_images(files[:1]))  # fmt: skip


def _model_stats(args: argparse.Namespace, feats: F.FeatureFn, device: torch.device) -> tuple[FeatureStats, int]:
    """Statistics of images generated on the fly from --model for --seeds (never gathered); also the NFE."""
    problem, is_image, dev = model(args.model, device)
    if not is_image or len(problem.shape) != 3:
        raise SystemExit(f"--model {args.model}: FID needs an image model (digits or diffusers:PATH)")
    if len(args.seeds) < 2:
        raise SystemExit("--seeds: FID needs at least 2 images (the standard protocol uses 0-49999)")
    sampler, knobs = sampler_setup(args.sampler, args.opt)
    sigmas = schedule_for(args, problem)
    chunks = list(iter_chunks(args.seeds, args.batch))

    def batches() -> Any:
        for _, sd in chunks:
            x = generate(problem.denoiser, sd, problem.shape, sigmas, sampler=sampler, device=dev,
                                  dtype=problem.dtype, **knobs)  # fmt: skip
            yield F.to_uint8(x)

    def probe() -> Tensor:
        return F.to_uint8(torch.zeros(1, *problem.shape))

    stats = _stats_of_batches(batches(), feats, len(chunks), args.progress, "fid", probe)
    return stats, count_nfe(sigmas, sampler, **knobs)


def _fid(args: argparse.Namespace) -> int:
    if (args.images is None) == (args.model is None):
        raise SystemExit("fid: give exactly one of --images DIR (generated images) or --model SPEC (generate now)")
    if (args.ref is None) == (args.ref_stats is None):
        raise SystemExit("fid: give exactly one of --ref DIR (reference images) or --ref-stats FILE.npz (mu, sigma)")
    ref_stats: tuple[Tensor, Tensor] | None = None
    if args.ref_stats is not None:  # fail fast, before any sampling
        if not Path(args.ref_stats).is_file():
            raise SystemExit(f"--ref-stats {args.ref_stats}: no such file")
        try:
            ref_stats = load_stats(args.ref_stats)
        except (ValueError, OSError) as e:
            raise SystemExit(f"--ref-stats {args.ref_stats}: {e}") from None
    weights = F.find_inception_weights(args.inception_weights)
    init_distributed()
    rank, world = dist_info()
    device = device_for(args.device)
    feats = F.inception(weights, device)
    progress = args.progress and rank == 0
    t0 = time.perf_counter()
    nfe = None
    if args.images is not None:
        stats = _folder_stats(args.images, args.batch, feats, progress)
    else:
        stats, nfe = _model_stats(args, feats, device)
    ref = ref_stats if ref_stats is not None else _folder_stats(args.ref, args.batch, feats, progress).mean_cov()
    if ref[0].shape != (stats.dim,):
        raise SystemExit(f"reference statistics have {ref[0].shape[0]} features, the images {stats.dim}: "
                         "both sides must come from the same network (Inception pool3: 2048)")  # fmt: skip
    if args.save_stats and rank == 0:
        stats.save(args.save_stats)
    fid = frechet_distance_from_stats(stats, ref)
    what = (
        args.images
        if args.images is not None
        else f"{args.model} ({args.sampler}, {args.schedule}, {args.steps} steps)"
    )
    payload = {
        "fid": fid, "images": args.images, "model": args.model, "num_images": stats.n, "nfe_per_sample": nfe,
        "sampler": args.sampler if args.model else None, "schedule": args.schedule if args.model else None,
        "steps": args.steps if args.model else None, "ref": args.ref, "ref_stats": args.ref_stats,
        "saved_stats": args.save_stats, "inception_weights": weights, "world_size": world,
        "seconds": time.perf_counter() - t0,
    }  # fmt: skip
    note = "" if stats.n >= 50_000 else " (standard protocol: 50,000 images; FID is biased upwards below that)"
    emit(args, payload, f"FID {fid:.4f}: {stats.n} images of {what} vs {args.ref or args.ref_stats}{note}")
    return 0


# ---- parser --------------------------------------------------------------------------------------


def _sampling_args(p: argparse.ArgumentParser) -> None:
    """--sampler / --opt / --schedule / --steps, read from the registry."""
    lines = [f"{s.name}: {s.summary}" + (f" [{', '.join(s.knob_names)}]" if s.knobs else "") for s in REGISTRY.values()]
    p.add_argument("--sampler", default="heun", metavar="NAME", help="; ".join(lines))
    p.add_argument("--opt", nargs="*", metavar="KNOB=VALUE", help="sampler knobs, e.g. order=3 or s_churn=40")
    p.add_argument("--schedule", default="karras", choices=SCHEDULES)
    p.add_argument("--steps", type=int, default=18)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edm-samplers", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--version", action="version", version=f"edm_samplers {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    add_demo(sub)

    g = sub.add_parser("generate", help="seeds -> PNG grid / .npz with any sampler and schedule (torchrun-ready)")
    g.add_argument("--model", default="digits", help=f"digits, one of {', '.join(PROBLEMS)}, or diffusers:PATH")
    g.add_argument("--seeds", type=_parse_seeds, default=_parse_seeds("0-63"), help="e.g. 0-63 or 1,5,9")
    _sampling_args(g)
    g.add_argument("--batch", type=int, default=256, help="seeds per batch (fixed chunks of global seed positions)")
    g.add_argument("--out", default=None, help="samples.npz, or grid.png for image models")
    g.add_argument("--stats", default=None, help="write feature statistics (mu, sigma) to this .npz")
    g.add_argument("--device", default=None, help="diffusers models: default this rank's CUDA device, else cpu")
    g.add_argument("--progress", action="store_true", help="tqdm progress bar (only on a terminal)")
    g.add_argument("--json", action="store_true")
    g.set_defaults(func=_generate)

    f = sub.add_parser(
        "fid", help="Inception-v3 FID of a folder or of a model's samples (local weights, torchrun-ready)"
    )
    src = f.add_mutually_exclusive_group()
    src.add_argument("--images", default=None, help="folder of generated images (PNG/JPEG, searched recursively)")
    src.add_argument("--model", default=None, help="generate on the fly: digits or diffusers:PATH (local checkpoint)")
    f.add_argument("--seeds", type=_parse_seeds, default=_parse_seeds("0-49999"), help="with --model (default 0-49999)")
    _sampling_args(f)
    ref = f.add_mutually_exclusive_group()
    ref.add_argument("--ref", default=None, help="folder of reference images")
    ref.add_argument("--ref-stats", default=None, help="reference statistics .npz with arrays mu, sigma (EDM's files)")
    f.add_argument("--save-stats", default=None, help="write the generated side's mu, sigma, n to this .npz")
    hub = "else $EDM_SAMPLERS_INCEPTION, else torch hub's checkpoints"
    f.add_argument("--inception-weights", default=None, help=f"local {F.INCEPTION_FILE} ({hub})")
    f.add_argument("--batch", type=int, default=250, help="images per batch (fixed chunks of global positions)")
    f.add_argument("--device", default=None, help="default: this rank's CUDA device, else cpu")
    f.add_argument("--progress", action="store_true")
    f.add_argument("--json", action="store_true")
    f.set_defaults(func=_fid)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
