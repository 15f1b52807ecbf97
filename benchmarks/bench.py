"""NFE sweeps (formerly ``edm-samplers bench``): global error vs a reference ODE solution, Frechet distance and
sliced Wasserstein vs the true distribution, for every sampler of the registry (and peers) on the named
problems (ring2d, mixture64d, digits-empirical, digits-model).

    python benchmarks/bench.py --problems ring2d mixture64d --out bench_out --verbose
    torchrun --nproc_per_node=2 benchmarks/bench.py --out bench_out    # seeds sharded, statistics reduced

Samplers are registry names or labels with knobs (``unipc:order=2``); default: every registry name with its
default knobs plus ``_harness.EXTRA``. Writes results.json, log-log plots (matplotlib) and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _harness as H
from edm_samplers._dist import dist_info, init_distributed
from edm_samplers._named import PROBLEMS, SCHEDULES


def build_parser() -> argparse.ArgumentParser:
    b = argparse.ArgumentParser(prog="bench.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    b.add_argument("--problems", nargs="+", default=["ring2d", "mixture64d"], help=", ".join(PROBLEMS))
    b.add_argument("--samplers", nargs="+", default=None, help="registry names or labels (default: all)")
    b.add_argument("--schedules", nargs="+", default=["karras"], choices=SCHEDULES)
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
    return b


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    init_distributed()
    rank, _ = dist_info()
    out_dir = Path(args.out)
    payload: dict[str, Any] = {"machine": H.machine_info(), "command": " ".join(sys.argv), "problems": {}}
    texts = []
    for name in args.problems:
        if name not in PROBLEMS:
            raise SystemExit(f"--problems: unknown {name!r}; choose from {', '.join(PROBLEMS)}")
        problem = PROBLEMS[name]()
        res, meta = H.sweep(
            problem, samplers=args.samplers, schedules=args.schedules, nfes=args.nfe, num_samples=args.samples,
            peers=not args.no_peers, cache_dir=None if args.no_cache else out_dir / "cache", chunk=args.batch,
            progress=args.progress,
            log=(lambda s: print(s, file=sys.stderr)) if args.verbose and rank == 0 else (lambda s: None),
        )  # fmt: skip
        reach = {f"{k[0]}/{k[1]}": v for k, v in H.nfe_to_reach(res, "global_error", args.error_threshold).items()}
        payload["problems"][name] = {
            "meta": meta,
            "results": [r.as_dict() for r in res],
            "nfe_to_reach_error": {"threshold": args.error_threshold, "nfe": reach},
        }
        texts.append(f"== {name}: {meta['description']} ({args.samples} seeds)")
        if problem.exact or name == "digits-model":
            texts += ["global RMS error vs the reference ODE solution:", H.format_table(res, "global_error", args.nfe)]
        texts += ["Frechet distance vs the data distribution:", H.format_table(res, "frechet", args.nfe)]
        if "floor" in meta:
            texts.append(f"(finite-sample floor: Frechet {meta['floor']['frechet']:.2e}, "
                         f"sliced W2 {meta['floor']['sliced_w2']:.2e})")  # fmt: skip
        texts.append("notes: " + "; ".join(meta.get("peers", [])))
        if rank == 0 and not args.no_plot:
            for metric in ("global_error", "frechet", "sliced_w2"):
                H.plot(res, metric, out_dir / f"{name}-{metric}.png", f"{name}: {metric} vs NFE")
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "results.json").write_text(json.dumps(payload, indent=1))
        print(json.dumps(payload, indent=2) if args.json else "\n".join(texts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
