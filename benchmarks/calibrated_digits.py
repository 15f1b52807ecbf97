"""Question: on the shipped digits model, how close to converged does a calibrated sampler get at 3-10 NFE?

For each NFE, :func:`edm_samplers.calibrate` fits the schedule, one direction scale and one sigma multiplier
per denoiser evaluation of a multistep solver (``--sampler``; ``--free-end`` lets the last level move), with
the analytical first step (``afs=``: the Gaussian closed form from the mean and covariance of the 1797
training digits, so the network runs ``nfe`` times over ``nfe + 1`` steps), on a calibration batch of seeds
100000.. against Heun with 64 steps (127 NFE; ``--ref-steps``). The result is evaluated by the protocol of
``examples/evaluate_digits.py`` on 898 *held-out* seeds 0..897: clipped to [-1, 1], Frechet distance in the
shipped classifier's features against real half A. Beside it, in the same run and from the same initial
noise: diffusers' DPM-Solver++ 2M/3M, UniPC 2/3 and DEIS 2/3 (and k-diffusion's samplers when importable) on
EDM's rho = 7 and on log-linear schedules; the best peer per NFE. The calibration cost (wall and CPU seconds,
sampling runs) is printed beside each row.

Run: ``python benchmarks/calibrated_digits.py [--nfe 3 4 5 6 8 10] [--json out.json]`` (CPU; ~10 min). The
calibration (and its reference) runs on ``--calib-threads`` (1) so that its CPU seconds measure its cost; the
evaluation, converged and peer runs on ``--threads`` (2).
``--moment-weight W``: the joint stage also matches the mean and covariance of the classifier's features of the
calibration batch to the reference's (``calibrate(features=digits_features, moment_weight=W)``), still on the
calibration seeds only. ``--starts K``: multi-start calibration.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any, cast

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import digits_low_nfe as dl
import edm_samplers as es
import solvers_accuracy as sa
from _harness import finish_report
from edm_samplers._safetensors import save_file
from edm_samplers.afs import data_moments
from edm_samplers.models import digits, digits_features
from edm_samplers.models.calibrations import CALIBRATIONS_DIR, MOMENTS_FILE
from edm_samplers.models.digits import load_digits_images
from edm_samplers.solvers.api import sampler_function

SIG_MAX, SIG_MIN = 80.0, 0.002


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nfe", type=int, nargs="+", default=[3, 4, 5, 6, 7, 8, 10])
    ap.add_argument("--sampler", default="ipndm:order=4", help="registry label of the calibrated solver")
    ap.add_argument("--calib-batch", type=int, default=128)
    ap.add_argument("--max-evals", type=int, default=150, help="sampling runs per calibration")
    ap.add_argument("--ref-steps", type=int, default=64, help="Heun steps of the calibration reference")
    ap.add_argument("--samples", type=int, default=898)
    ap.add_argument("--free-end", action="store_true", help="let the last positive level move (default: 0.002)")
    ap.add_argument("--no-shifts", action="store_true", help="fit direction scales only (no sigma multipliers)")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument(
        "--moment-weight", type=float, default=None,
        help="calibrate(features=digits_features, moment_weight=W): match the feature mean/covariance too",
    )  # fmt: skip
    ap.add_argument("--starts", type=int, default=1, help="calibrate(starts=): multi-start")
    ap.add_argument("--threads", type=int, default=2, help="threads of the evaluation and peer runs")
    ap.add_argument(
        "--calib-threads", type=int, default=1,
        help="threads of the calibration (1: its CPU seconds are its cost, not thread spin)",
    )  # fmt: skip
    ap.add_argument(
        "--ship", action="store_true",
        help="write each calibration into the package (models/digits_calibrations/nfeN.json) and the training "
        "digits' moments (models/digits_moments.safetensors): what models.digits_calibration serves",
    )  # fmt: skip
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.time()
    den = digits()
    real = cast(torch.Tensor, load_digits_images())
    afs = es.GaussianDenoiser.from_data(real, full_cov=True)  # the training set's moments
    if args.ship:  # the moments from_data built it from, for models.digits_afs()
        mean, cov = data_moments(real)
        save_file({"mean": mean, "cov": cov}, MOMENTS_FILE)
    perm = torch.randperm(real.shape[0], generator=torch.Generator().manual_seed(0))
    feats_a = digits_features(real[perm[:899]])
    real_fd = es.evaluation.frechet_distance(digits_features(real[perm[899:]]), feats_a)
    x0 = dl.latents(range(args.samples)) * SIG_MAX

    def fd(images: torch.Tensor) -> float:
        v = es.evaluation.frechet_distance(digits_features(images.clamp(-1, 1)), feats_a)
        return v if math.isfinite(v) else float("inf")

    converged = fd(dl.run(es.heun_sample, den, x0, es.karras_sigmas(128, SIG_MIN, SIG_MAX)))
    print(f"converged (Heun 255 NFE): FD {converged:.3f}; real B vs A {real_fd:.3f}", flush=True)
    xc = dl.latents(range(100_000, 100_000 + args.calib_batch)) * SIG_MAX
    t_ref, c_ref = time.time(), time.process_time()
    torch.set_num_threads(args.calib_threads)
    with torch.no_grad():
        ref = es.heun_sample(den, xc, es.karras_sigmas(args.ref_steps, SIG_MIN, SIG_MAX))
    ref_seconds, ref_cpu = time.time() - t_ref, time.process_time() - c_ref
    name, knobs = sa.pinned(args.sampler)
    f = sampler_function(name)
    peers: dict[str, tuple[Any, int]] = {}
    if not args.no_peers:
        peers = {k: (v, 1) for k, v in sa.peers_diffusers().items()}
        peers.update(sa.peers_kdiffusion())
    results: dict[str, Any] = {
        "converged": converged, "real_b_vs_a": real_fd, "ref_seconds": ref_seconds, "ref_cpu": ref_cpu, "rows": {}
    }  # fmt: skip
    print(
        f"(calibration reference: Heun {2 * args.ref_steps - 1} NFE on {args.calib_batch} seeds, {ref_seconds:.0f} s "
        f"wall, {ref_cpu:.0f} s CPU, computed once for all NFE)"
    )
    print(
        "| NFE | calibrated FD | / converged | calib. s wall / CPU | runs (network calls) | steps | best peer "
        "| peer FD | / converged |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    moment_opts: dict[str, Any] = {}
    if args.moment_weight is not None:
        moment_opts = {"features": digits_features, "moment_weight": args.moment_weight}
    for nfe in args.nfe:
        torch.set_num_threads(args.calib_threads)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cal = es.calibrate(den, xc, nfe, sampler=name, afs=afs, reference=ref,
                               sigma_min=None if args.free_end else SIG_MIN, fit_shifts=not args.no_shifts,
                               max_evals=args.max_evals, starts=args.starts, **moment_opts, **knobs)  # fmt: skip
        torch.set_num_threads(args.threads)
        opts = cal.run_options(afs)
        ours = fd(dl.run(lambda d, x, s, c=cal, o=opts: f(d, x, s, **c.knobs, **o), den, x0, cal.sigmas))
        prow: dict[str, float] = {}
        for pname, (pf, per) in peers.items():
            n = sa.steps_for(nfe, per)
            if n < 1:
                continue
            prow[pname] = min(
                fd(dl.run(pf, den, x0, es.karras_sigmas(n, SIG_MIN, SIG_MAX))),
                fd(dl.run(pf, den, x0, es.loglinear_sigmas(n, SIG_MIN, SIG_MAX))),
            )
        best = min(((v, k) for k, v in prow.items()), default=(math.nan, "-"))
        if args.ship:
            es.save_calibration(
                CALIBRATIONS_DIR / f"nfe{nfe}.json", cal, command="python " + " ".join(sys.argv),
                frechet_distance=ours, converged=converged, held_out_seeds=f"0..{args.samples - 1}",
                calibration_seeds=f"100000..{100_000 + args.calib_batch - 1}", torch=torch.__version__,
            )  # fmt: skip
        results["rows"][str(nfe)] = {
            "calibrated": ours, "seconds": cal.seconds, "cpu_seconds": cal.cpu_seconds, "runs": cal.evaluations,
            "network_calls": cal.network_calls, "reused_calls": cal.reused_calls,
            "sigmas": cal.sigmas.tolist(),
            "direction_scale": cal.direction_scale, "sigma_scale": cal.sigma_scale, "calib_mse": cal.error,
            "calib_loss": cal.loss,
            "min_batch": cal.min_batch, "gap": cal.gap, "warnings": [str(w.message) for w in caught], "peers": prow,
        }  # fmt: skip
        print(
            f"| {nfe} | {ours:.2f} | {ours / converged:.2f}x | {cal.seconds:.0f} / {cal.cpu_seconds:.0f} | "
            f"{cal.evaluations} ({cal.network_calls} calls, {cal.reused_calls} re-used) | "
            f"{cal.sigmas.numel() - 1} | {best[1]} | {best[0]:.1f} | {best[0] / converged:.2f}x |",
            flush=True,
        )
    finish_report(results, t_start, args.json)


if __name__ == "__main__":
    main()
