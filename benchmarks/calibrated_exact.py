"""Question: on the exact-denoiser problems, how far below the peers does a calibrated sampler get at 3-10 NFE?

For each problem of ``solvers_accuracy.py`` and each NFE, :func:`edm_samplers.calibrate` fits the schedule
(ends pinned at 80 and 0.002, where the peers' schedules run), one direction scale and one sigma multiplier
per denoiser evaluation of iPNDM-4, with the analytical first step (``afs=``: the Gaussian closed form from the
mean and covariance of 20,000 data samples, or of the data points for the empirical denoiser), on a
*calibration* batch (seed 1) against the float64 Dormand-Prince reference. Every number is then measured on a
separate *evaluation* batch (256 samples, seed 0), beside the peers in the same run (diffusers' DPM-Solver++
2M/3M, UniPC 2/3, DEIS 2/3, and k-diffusion's when importable), each on rho = 7 and log-linear schedules from
80 to 0.002, the better of the two. Error: RMS of ||x - x_ref|| / sqrt(dim). The calibration cost (seconds,
sampling runs) and the batch-size rule's verdict are printed with each row.

Run: ``python benchmarks/calibrated_exact.py [--nfe 3 4 5 6 8 10] [--starts 3] [--json out.json]`` (CPU, float64;
``--starts``: multi-start calibration, the start with the lowest calibration error is kept).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import edm_samplers as es
import solvers_accuracy as sa
from _harness import finish_report
from edm_samplers.evaluation import ode_reference
from edm_samplers.solvers.api import sampler_function

SIG_MAX, SIG_MIN = 80.0, 0.002


def closed_form(den: Any) -> es.GaussianDenoiser:
    """The data's first two moments: 20,000 samples of a mixture, or the points of an empirical denoiser."""
    data = den.means if float(den.stds.max()) == 0 else den.sample(20_000, torch.Generator().manual_seed(5))
    return es.GaussianDenoiser.from_data(data, full_cov=True)


def peer_error(f: Any, den: Any, x0: torch.Tensor, sig: torch.Tensor, ref: torch.Tensor) -> float:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            e = sa.rms(f(den, x0.clone(), sig).double(), ref)
    except Exception:
        e = float("inf")
    return e if math.isfinite(e) else float("inf")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nfe", type=int, nargs="+", default=[3, 4, 5, 6, 8, 10])
    ap.add_argument("--sampler", default="ipndm:order=4", help="registry label of the calibrated solver")
    ap.add_argument("--batch", type=int, default=256, help="evaluation batch (seed 0)")
    ap.add_argument("--calib-batch", type=int, default=1024, help="calibration batch (seed 1)")
    ap.add_argument("--max-evals", type=int, default=500, help="sampling runs per calibration")
    ap.add_argument("--no-shifts", action="store_true", help="fit direction scales only (no sigma multipliers)")
    ap.add_argument("--starts", type=int, default=1, help="calibrate(starts=): multi-start, best calibration error")
    ap.add_argument("--problems", nargs="*", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.time()
    name, knobs = sa.pinned(args.sampler)
    f = sampler_function(name)
    peers: dict[str, tuple[Any, int]] = {k: (v, 1) for k, v in sa.peers_diffusers().items()}
    peers.update(sa.peers_kdiffusion())
    g = torch.Generator().manual_seed(1)
    results: dict[str, Any] = {}
    for pname, (den, z) in sa.problems(args.batch).items():
        if args.problems and pname not in args.problems:
            continue
        zc = torch.randn((args.calib_batch, *z.shape[1:]), generator=g, dtype=z.dtype)
        x0, xc = z * SIG_MAX, zc * SIG_MAX
        ref = ode_reference(den, x0, [SIG_MAX, SIG_MIN, 0.0])
        ref_c = ode_reference(den, xc, [SIG_MAX, SIG_MIN, 0.0])
        afs = closed_form(den)
        rows: dict[str, Any] = {}
        print(f"\n## {pname} (RMS error on the evaluation batch; calibration batch {args.calib_batch})")
        print("| NFE | calibrated | best peer | peer error | ratio | calib. s | runs | B_min (rule) |")
        print("|---|---|---|---|---|---|---|---|")
        for nfe in args.nfe:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                cal = es.calibrate(den, xc, nfe, sampler=name, afs=afs, reference=ref_c, sigma_min=SIG_MIN,
                                   fit_shifts=not args.no_shifts, max_evals=args.max_evals, starts=args.starts,
                                   **knobs)  # fmt: skip
            opts = cal.run_options(afs)
            ours = peer_error(lambda d, x, s, c=cal, o=opts: f(d, x, s, **c.knobs, **o), den, x0, cal.sigmas, ref)
            prow = {}
            for k, (pf, per) in peers.items():
                n = sa.steps_for(nfe, per)
                prow[k] = min(
                    peer_error(pf, den, x0, es.karras_sigmas(n, SIG_MIN, SIG_MAX), ref),
                    peer_error(pf, den, x0, es.loglinear_sigmas(n, SIG_MIN, SIG_MAX), ref),
                )
            best = min(((v, k) for k, v in prow.items()), default=(math.nan, "-"))
            rows[str(nfe)] = {
                "calibrated": ours, "calib_rms": math.sqrt(cal.error), "seconds": cal.seconds,
                "cpu_seconds": cal.cpu_seconds,
                "runs": cal.evaluations, "min_batch": cal.min_batch, "gap": cal.gap, "sigmas": cal.sigmas.tolist(),
                "direction_scale": cal.direction_scale, "sigma_scale": cal.sigma_scale, "peers": prow,
                "warned": bool(caught),
            }  # fmt: skip
            print(
                f"| {nfe} | {ours:.2e} | {best[1]} | {best[0]:.2e} | {ours / best[0]:.2f} | {cal.seconds:.0f} | "
                f"{cal.evaluations} | {cal.min_batch} |",
                flush=True,
            )
        peer5 = min(rows["5"]["peers"].values()) if "5" in rows else math.nan
        for nfe in (3, 4):
            if str(nfe) in rows:
                v = rows[str(nfe)]["calibrated"]
                verdict = "beats" if v < peer5 else "MISSES"
                print(f"NFE {nfe} calibrated {v:.2e} vs best peer at NFE 5 {peer5:.2e}: {verdict}")
        results[pname] = rows
    finish_report(results, t_start, args.json)


if __name__ == "__main__":
    main()
