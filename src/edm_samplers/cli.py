"""Command line: ``edm-samplers <command>`` (also ``python -m edm_samplers``).

Commands:
    demo      sample the shipped digits model (or, without its weights, a closed-form Gaussian mixture),
              write an image grid PNG and print an NFE-vs-quality table.
    generate  seeds -> PNG grid and/or .npz, with any sampler and schedule of the library.
    bench     the NFE sweeps: global error vs a reference ODE solution, Frechet distance and sliced
              Wasserstein vs the true distribution, for every sampler and schedule (and peers).
    fid       Inception-v3 FID (torch-fidelity's network, local weights only) of a folder of images or of
              images generated on the fly from a model, against a folder or a mu/sigma .npz file.

Models (--model): digits (shipped), the named problems, or diffusers:PATH (a local diffusers
UNet2DModel checkpoint with its scheduler config, wrapped by edm_samplers.from_diffusers).

``generate``, ``bench`` and ``fid`` also run under ``torchrun --nproc_per_node=K``: seeds are split into
fixed chunks dealt across ranks, every sample depends only on its seed, statistics are summed exactly
across ranks (float64) and only rank 0 writes. Add ``--json`` for machine-readable output.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import __version__
from . import _bench as B
from . import _fid as F
from .metrics import FeatureStats, frechet_distance_from_stats, load_stats
from .models.schedules import digits_schedule, digits_schedules
from .noise import PerSampleNoise

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


def save_grid(images: Tensor, path: Path, *, scale: int = 4, pad: int = 1) -> None:
    """Write ``[N, C, H, W]`` images in [-1, 1] as one PNG grid (needs pillow: the ``cli`` extra)."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("writing PNG images needs pillow: pip install 'edm-samplers[cli]'") from None
    x = F.to_uint8(images).cpu()
    n, c, h, w = x.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = torch.full((c, rows * (h + pad) + pad, cols * (w + pad) + pad), 255, dtype=torch.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w] = x[i]
    arr = grid.permute(1, 2, 0).numpy()
    img = Image.fromarray(arr[:, :, 0] if c == 1 else arr)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


DIFFUSERS = "diffusers:"


def _no_features(x: Tensor) -> Tensor:
    raise SystemExit("statistics of a diffusers model are Inception features: use edm-samplers fid --save-stats")


def _device(name: str | None) -> torch.device:
    """--device, defaulting to this rank's CUDA device when there is one."""
    if name:
        return torch.device(name)
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def _model(name: str, device: torch.device | None = None) -> tuple[B.Problem, bool, torch.device]:
    """(problem, is_image, device to sample on) for --model; built-in models sample on the CPU."""
    cpu = torch.device("cpu")
    if name == "digits":
        return B.digits_model_nodata(), True, cpu
    if name in B.PROBLEMS:
        p = B.PROBLEMS[name]()
        return p, len(p.shape) == 3, cpu
    if name.startswith(DIFFUSERS):
        dev = device or _device(None)
        den, shape, smin, smax = F.load_diffusers(name[len(DIFFUSERS) :], dev)

        def truth(n: int) -> Tensor:
            raise SystemExit(f"{name} has no known data distribution; compare it with edm-samplers fid")

        p = B.Problem(name, den, shape, truth, _no_features, sigma_min=smin, sigma_max=smax, dtype=torch.float32,
                      exact=False, description=f"diffusers checkpoint {name[len(DIFFUSERS) :]}")  # fmt: skip
        return p, True, dev
    raise SystemExit(f"--model must be one of digits, {', '.join(B.PROBLEMS)} or diffusers:PATH; got {name!r}")


def _sample_chunk(problem: B.Problem, fn: Any, kwargs: dict[str, Any], seeds: Sequence[int], sigmas: Tensor,
                  device: torch.device) -> tuple[Tensor, int]:  # fmt: skip
    """Samples of ``seeds`` (one batch) on ``device`` and the NFE per sample; latents drawn per seed on the CPU."""
    src = PerSampleNoise(seeds)
    lat = src.randn((len(seeds), *problem.shape), dtype=torch.float64, device=torch.device("cpu"))
    x = lat.to(device=device, dtype=problem.dtype) * float(sigmas[0])
    den = B.CountingDenoiser(problem.denoiser)
    with torch.no_grad():
        out = fn(den, x, sigmas, noise=src, dtype=problem.dtype, **kwargs)
    return out, den.calls


def _sample_chunks(problem: B.Problem, fn: Any, kwargs: dict[str, Any], seeds: Sequence[int], sigmas: Tensor,
                   chunk: int, progress: bool, device: torch.device | None = None,
                   ) -> tuple[list[tuple[int, Tensor]], int]:  # fmt: skip
    """Sample this rank's chunks; returns [(global start, samples on the CPU)] and the NFE per sample."""
    out = []
    nfe = 0
    chunks = list(B.iter_chunks(seeds, chunk))
    bar = B._bar(len(chunks), progress, "generate")
    for start, sd in chunks:
        x, nfe = _sample_chunk(problem, fn, kwargs, sd, sigmas, device or torch.device("cpu"))
        out.append((start, x.cpu()))
        bar.update(1)
    bar.close()
    return out, nfe


def _sampler_setup(args: argparse.Namespace, problem: B.Problem) -> tuple[Any, dict[str, Any], Tensor]:
    """(sampler function, its knobs, sigmas) from --sampler / --opt / --schedule / --steps."""
    avail = B.available_samplers()
    if args.sampler not in avail:
        raise SystemExit(f"--sampler must be one of {', '.join(avail)}; got {args.sampler!r}")
    spec, fn = avail[args.sampler]
    kwargs = dict(spec.kwargs)
    for kv in args.opt or []:
        k, _, v = kv.partition("=")
        kwargs[k] = float(v) if v.replace(".", "", 1).replace("e", "", 1).replace("-", "").isdigit() else v
    try:
        sigmas = B.make_sigmas(args.schedule, args.steps, problem.sigma_min, problem.sigma_max)
    except ValueError as e:
        raise SystemExit(f"--schedule {args.schedule} --steps {args.steps}: {e}") from None
    return fn, kwargs, sigmas


def _nfe_counter(fn: Any, kwargs: dict[str, Any], shape: Sequence[int]) -> Any:
    """steps -> NFE of ``fn`` on the karras schedule, measured on a trivial denoiser."""

    def nfe(n: int) -> int:
        sig = B.make_sigmas("karras", n)
        return B.measure_nfe(lambda d: fn(d, torch.zeros(1, *shape), sig, noise=PerSampleNoise([0]), **kwargs))

    return nfe


def _emit(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    if B.dist_info()[0] != 0:
        return
    print(json.dumps(payload, indent=2) if args.json else text)


# ---- demo ----------------------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    # The demo's batches are small (64 x 1x8x8): one thread is as fast on an idle 2-core machine, and on a
    # busy one torch 2.13's 2-thread CPU kernels were measured 10x slower than 1 thread (OpenMP contention).
    torch.set_num_threads(1)
    try:
        problem = B.digits_model_nodata()
    except FileNotFoundError:
        return _demo_analytic(args, t0)
    seeds = list(range(args.samples))
    avail = B.available_samplers()
    shown = [s for s in ("euler", "heun", "dpmpp_2m") if s in avail]
    # Reference: the same seeds through the nearly converged ODE (Heun, 64 steps = 127 NFE); also the grid.
    heun = avail["heun"][1]
    ref_sig = B.make_sigmas("karras", 64)
    ref = torch.cat([c for _, c in _sample_chunks(problem, heun, {}, seeds, ref_sig, 256, False)[0]])
    feats_ref = problem.features(ref)
    rows = []

    def row(label: str, fn: Any, kwargs: dict[str, Any], sig: Tensor) -> None:
        from .metrics import frechet_distance

        parts, nfe = _sample_chunks(problem, fn, kwargs, seeds, sig, 256, False)
        out = torch.cat([c for _, c in parts])
        flat = (out - ref).reshape(len(seeds), -1)
        err = float(flat.norm(dim=1).mean() / ref.reshape(len(seeds), -1).norm(dim=1).mean())
        fd = frechet_distance(problem.features(out), feats_ref)
        rows.append({"sampler": label, "steps": sig.numel() - 1, "nfe": nfe, "rel_error": err,
                     "frechet_to_converged": fd})  # fmt: skip

    for nfe_target in args.nfe:
        for name in shown:
            spec, fn = avail[name]
            steps = B.steps_for_nfe(_nfe_counter(fn, spec.kwargs, problem.shape), [nfe_target])
            if steps:
                row(name, fn, spec.kwargs, B.make_sigmas("karras", steps[0]))
        # The library's low-NFE answer: a 3rd-order solver on the schedule tuned for this model.
        if "unipc" in avail and nfe_target in digits_schedules().get("unipc3", []):
            row("unipc3 tuned", avail["unipc"][1], {"order": 3}, digits_schedule("unipc3", nfe_target))
    png = Path(args.out)
    save_grid(ref[:64], png, scale=6)
    payload = {"model": "digits", "samples": args.samples, "png": str(png), "rows": rows,
               "seconds": time.perf_counter() - t0}  # fmt: skip
    lines = [
        f"edm_samplers {__version__}: shipped digits model, {args.samples} seeds; image grid -> {png}",
        "quality vs the converged ODE solution of the same seeds (Heun, 127 NFE); rho=7 schedules unless tuned:",
        f"{'sampler':<14}{'steps':>6}{'NFE':>5}{'rel. error':>12}{'Frechet (features)':>20}",
    ]
    lines += [f"{r['sampler']:<14}{r['steps']:>6}{r['nfe']:>5}{r['rel_error']:>12.3e}{r['frechet_to_converged']:>20.3e}"
              for r in rows]  # fmt: skip
    lines.append(f"({payload['seconds']:.1f} s)")
    _emit(args, payload, "\n".join(lines))
    return 0


def _demo_analytic(args: argparse.Namespace, t0: float) -> int:
    """Fallback demo on a 16-D Gaussian mixture (exact denoiser) when the digits weights are absent."""
    from .analytic import GaussianMixture
    from .reference import ode_reference

    g = torch.Generator().manual_seed(0)
    gm = GaussianMixture(torch.randn(8, 16, generator=g, dtype=torch.float64),
                         0.05 + 0.2 * torch.rand(8, generator=g, dtype=torch.float64))  # fmt: skip
    seeds = list(range(args.samples))
    x0 = PerSampleNoise(seeds).randn((len(seeds), 16), dtype=torch.float64, device=torch.device("cpu")) * 80.0
    ref = ode_reference(gm, x0, B.make_sigmas("karras", 4), rtol=1e-9, atol=1e-9)
    avail = B.available_samplers()
    rows = []
    for nfe_target in args.nfe:
        for name in [s for s in ("euler", "heun", "dpmpp_2m", "unipc") if s in avail]:
            fn = avail[name][1]
            steps = B.steps_for_nfe(_nfe_counter(fn, {}, (16,)), [nfe_target])
            if not steps:
                continue
            den = B.CountingDenoiser(gm)
            out = fn(den, x0, B.make_sigmas("karras", steps[0]), dtype=torch.float64)
            err = float((out - ref).norm(dim=1).mean() / ref.norm(dim=1).mean())
            rows.append({"sampler": name, "steps": steps[0], "nfe": den.calls, "rel_error": err})
    payload = {"model": "gaussian-mixture-16d", "rows": rows, "seconds": time.perf_counter() - t0}
    lines = [
        f"edm_samplers {__version__}: digits weights not found; {args.samples} samples of a 16-D Gaussian "
        "mixture (exact denoiser); error vs the exact ODE solution (Dormand-Prince reference)",
        f"{'sampler':<10}{'steps':>6}{'NFE':>5}{'rel. error':>12}",
    ]
    lines += [f"{r['sampler']:<10}{r['steps']:>6}{r['nfe']:>5}{r['rel_error']:>12.3e}" for r in rows]
    lines.append(f"({payload['seconds']:.1f} s)")
    _emit(args, payload, "\n".join(lines))
    return 0


# ---- generate ------------------------------------------------------------------------------------


def _generate(args: argparse.Namespace) -> int:
    B.init_distributed()
    rank, world = B.dist_info()
    is_diffusers = args.model.startswith(DIFFUSERS)
    if is_diffusers and args.stats:
        raise SystemExit("--stats: for a diffusers model use edm-samplers fid --model ... --save-stats (Inception)")
    problem, is_image, device = _model(args.model, _device(args.device) if is_diffusers else None)
    fn, kwargs, sigmas = _sampler_setup(args, problem)
    seeds = args.seeds
    t0 = time.perf_counter()
    parts, nfe = _sample_chunks(problem, fn, kwargs, seeds, sigmas, args.batch, args.progress and rank == 0, device)
    feats_dim = None
    stats = None
    if parts and not is_diffusers:
        f = problem.features(parts[0][1])
        feats_dim = f.shape[1]

    # Every rank needs the dim even if it got no chunk: the features' width is fixed per model.
    if feats_dim is None:
        feats_dim = (
            1 if is_diffusers else problem.features(torch.zeros(2, *problem.shape, dtype=problem.dtype)).shape[1]
        )
    stats = FeatureStats(feats_dim)
    if not is_diffusers:  # a diffusers model's statistics live in Inception space: edm-samplers fid
        for _, s in parts:
            stats.update(problem.features(s))
    stats.all_reduce(group=B.cpu_group())
    # Samples are written per rank-chunk into one file by rank 0 only: ranks send nothing but statistics,
    # so each rank writes its own shard file when several ranks run (rank 0 writes the summary).
    out_npz = Path(args.out) if args.out else None
    written = []
    if out_npz is not None:
        samples = torch.cat([s for _, s in parts]) if parts else torch.zeros(0, *problem.shape)
        my_seeds = [seeds[a + i] for a, s in parts for i in range(s.shape[0])]
        target = out_npz if world == 1 else out_npz.with_name(f"{out_npz.stem}.rank{rank}{out_npz.suffix}")
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
        "model": args.model, "sampler": args.sampler, "schedule": args.schedule, "steps": args.steps,
        "nfe_per_sample": nfe, "num_samples": num, "world_size": world, "files": written,
        "stats_file": args.stats, "feature_mean_norm": None if mu is None else float(mu.norm()),
        "feature_cov_trace": None if cov is None else float(cov.trace()), "seconds": time.perf_counter() - t0,
    }  # fmt: skip
    text = (f"{num} samples ({args.sampler}, {args.schedule}, {args.steps} steps, {nfe} NFE) on {world} "
            f"process(es) in {payload['seconds']:.1f} s; wrote {', '.join(written) or 'nothing'}")  # fmt: skip
    _emit(args, payload, text)
    return 0


# ---- bench ---------------------------------------------------------------------------------------


def _bench(args: argparse.Namespace) -> int:
    B.init_distributed()
    rank, _ = B.dist_info()
    out_dir = Path(args.out)
    payload: dict[str, Any] = {"machine": B.machine_info(), "command": " ".join(sys.argv), "problems": {}}
    texts = []
    for name in args.problems:
        if name not in B.PROBLEMS:
            raise SystemExit(f"--problems: unknown {name!r}; choose from {', '.join(B.PROBLEMS)}")
        problem = B.PROBLEMS[name]()
        res, meta = B.sweep(
            problem, samplers=args.samplers, schedules=args.schedules, nfes=args.nfe, num_samples=args.samples,
            peers=not args.no_peers, cache_dir=None if args.no_cache else out_dir / "cache", chunk=args.batch,
            progress=args.progress,
            log=(lambda s: print(s, file=sys.stderr)) if args.verbose and rank == 0 else (lambda s: None),
        )  # fmt: skip
        reach = {f"{k[0]}/{k[1]}": v for k, v in B.nfe_to_reach(res, "global_error", args.error_threshold).items()}
        payload["problems"][name] = {
            "meta": meta,
            "results": [r.as_dict() for r in res],
            "nfe_to_reach_error": {"threshold": args.error_threshold, "nfe": reach},
        }
        texts.append(f"== {name}: {meta['description']} ({args.samples} seeds)")
        if problem.exact or name == "digits-model":
            texts += ["global RMS error vs the reference ODE solution:", B.format_table(res, "global_error", args.nfe)]
        texts += ["Frechet distance vs the data distribution:", B.format_table(res, "frechet", args.nfe)]
        if "floor" in meta:
            texts.append(f"(finite-sample floor: Frechet {meta['floor']['frechet']:.2e}, "
                         f"sliced W2 {meta['floor']['sliced_w2']:.2e})")  # fmt: skip
        texts.append("notes: " + "; ".join(meta.get("peers", [])))
        if rank == 0 and not args.no_plot:
            for metric in ("global_error", "frechet", "sliced_w2"):
                B.plot(res, metric, out_dir / f"{name}-{metric}.png", f"{name}: {metric} vs NFE")
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "results.json").write_text(json.dumps(payload, indent=1))
    _emit(args, payload, "\n".join(texts))
    return 0


# ---- fid -----------------------------------------------------------------------------------------


def _stats_of_batches(batches: Any, feats: F.FeatureFn, num_chunks: int, progress: bool, desc: str,
                      probe: Any) -> FeatureStats:  # fmt: skip
    """FeatureStats of this rank's uint8 image batches, all-reduced over ranks (exact float64 sums).

    ``probe()`` gives one batch whose features fix the width on a rank that got no batch.
    """
    stats: FeatureStats | None = None
    bar = B._bar(num_chunks, progress, desc)
    for u8 in batches:
        f = feats(u8)
        if stats is None:
            stats = FeatureStats(f.shape[1])
        stats.update(f)
        bar.update(1)
    bar.close()
    if stats is None:
        stats = FeatureStats(feats(probe()).shape[1])
    return stats.all_reduce(group=B.cpu_group())


def _folder_stats(folder: str, batch: int, feats: F.FeatureFn, progress: bool) -> FeatureStats:
    """Statistics of every image under ``folder``: fixed chunks of the sorted file list, dealt across ranks."""
    files = F.list_images(folder)
    chunks = B.shard_chunks(len(files), batch)
    return _stats_of_batches((F.read_images(files[a:b]) for a, b in chunks), feats, len(chunks), progress,
                             Path(folder).name, lambda: F.read_images(files[:1]))  # fmt: skip


def _model_stats(args: argparse.Namespace, feats: F.FeatureFn, device: torch.device) -> tuple[FeatureStats, int]:
    """Statistics of images generated on the fly from --model for --seeds (never gathered); also the NFE."""
    problem, is_image, dev = _model(args.model, device)
    if not is_image or len(problem.shape) != 3:
        raise SystemExit(f"--model {args.model}: FID needs an image model (digits or diffusers:PATH)")
    if len(args.seeds) < 2:
        raise SystemExit("--seeds: FID needs at least 2 images (the standard protocol uses 0-49999)")
    fn, kwargs, sigmas = _sampler_setup(args, problem)
    chunks = list(B.iter_chunks(args.seeds, args.batch))
    nfe = [0]

    def batches() -> Any:
        for _, sd in chunks:
            x, nfe[0] = _sample_chunk(problem, fn, kwargs, sd, sigmas, dev)
            yield F.to_uint8(x)

    def probe() -> Tensor:
        return F.to_uint8(torch.zeros(1, *problem.shape))

    stats = _stats_of_batches(batches(), feats, len(chunks), args.progress, "fid", probe)
    return stats, nfe[0]


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
    B.init_distributed()
    rank, world = B.dist_info()
    device = _device(args.device)
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
    _emit(args, payload, f"FID {fid:.4f}: {stats.n} images of {what} vs {args.ref or args.ref_stats}{note}")
    return 0


# ---- parser --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edm-samplers", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--version", action="version", version=f"edm_samplers {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    samplers = list(B.available_samplers())

    d = sub.add_parser("demo", help="sample the shipped model, write a PNG grid, print an NFE-vs-quality table")
    d.add_argument("--samples", type=int, default=64, help="seeds for the grid and the quality table")
    d.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20], help="NFE budgets")
    d.add_argument("--out", default="edm_samplers_demo.png", help="image grid path")
    d.add_argument("--json", action="store_true", help="print JSON instead of a table")
    d.set_defaults(func=_demo)

    g = sub.add_parser("generate", help="seeds -> PNG grid / .npz with any sampler and schedule (torchrun-ready)")
    g.add_argument("--model", default="digits", help=f"digits, one of {', '.join(B.PROBLEMS)}, or diffusers:PATH")
    g.add_argument("--seeds", type=_parse_seeds, default=_parse_seeds("0-63"), help="e.g. 0-63 or 1,5,9")
    g.add_argument("--sampler", default="heun", help=", ".join(samplers))
    g.add_argument("--schedule", default="karras", choices=B.SCHEDULES)
    g.add_argument("--steps", type=int, default=18)
    g.add_argument("--opt", nargs="*", help="sampler knobs as key=value, e.g. s_churn=40")
    g.add_argument("--batch", type=int, default=256, help="seeds per batch (fixed chunks of global seed positions)")
    g.add_argument("--out", default=None, help="samples.npz, or grid.png for image models")
    g.add_argument("--stats", default=None, help="write feature statistics (mu, sigma) to this .npz")
    g.add_argument("--device", default=None, help="diffusers models: default this rank's CUDA device, else cpu")
    g.add_argument("--progress", action="store_true", help="tqdm progress bar (only on a terminal)")
    g.add_argument("--json", action="store_true")
    g.set_defaults(func=_generate)

    b = sub.add_parser("bench", help="NFE sweeps: error vs reference, Frechet / sliced W vs truth (torchrun-ready)")
    b.add_argument("--problems", nargs="+", default=["ring2d", "mixture64d"], help=", ".join(B.PROBLEMS))
    b.add_argument("--samplers", nargs="+", default=None, help="default: all of the library")
    b.add_argument("--schedules", nargs="+", default=["karras"], choices=B.SCHEDULES)
    b.add_argument("--nfe", type=int, nargs="+", default=[3, 4, 5, 6, 8, 10, 12, 16, 20, 25, 35, 50, 70, 100])
    b.add_argument("--samples", type=int, default=2000)
    b.add_argument("--batch", type=int, default=1000)
    b.add_argument("--error-threshold", type=float, default=1e-2, help="report the NFE reaching this RMS error")
    b.add_argument("--out", default="bench_out", help="folder for results.json, plots and the reference cache")
    b.add_argument("--no-peers", action="store_true", help="skip k-diffusion / diffusers")
    b.add_argument("--no-cache", action="store_true", help="recompute the reference solutions")
    b.add_argument("--no-plot", action="store_true")
    b.add_argument("--progress", action="store_true")
    b.add_argument("--verbose", action="store_true")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=_bench)

    f = sub.add_parser(
        "fid", help="Inception-v3 FID of a folder or of a model's samples (local weights, torchrun-ready)"
    )
    src = f.add_mutually_exclusive_group()
    src.add_argument("--images", default=None, help="folder of generated images (PNG/JPEG, searched recursively)")
    src.add_argument("--model", default=None, help="generate on the fly: digits or diffusers:PATH (local checkpoint)")
    f.add_argument("--seeds", type=_parse_seeds, default=_parse_seeds("0-49999"), help="with --model (default 0-49999)")
    f.add_argument("--sampler", default="heun", help=", ".join(samplers))
    f.add_argument("--schedule", default="karras", choices=B.SCHEDULES)
    f.add_argument("--steps", type=int, default=18)
    f.add_argument("--opt", nargs="*", help="sampler knobs as key=value, e.g. s_churn=40")
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
