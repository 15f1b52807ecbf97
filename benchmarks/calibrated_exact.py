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

Run: ``python benchmarks/calibrated_exact.py [--nfe 3 4 5 6 8 10] [--starts 3] [--trajectory] [--batch 256]
[--json out.json]`` (CPU, float64; ``--starts``: multi-start calibration, the start with the lowest calibration
error is kept; ``--trajectory``: the calibration also matches the exact ODE states at every level it lands on;
``--batch``: evaluation samples, drawn apart so that the problems stay the same; ``--rule-batch CAP``: where a
calibration's batch-size rule (``Calibration.min_batch``) asks for more samples than it had, calibrate again on
that many, rounded up to a power of 2 and capped at CAP: the rule applied by the search's user, as docs/api.md
describes). The ratio's 95 % bootstrap interval (paired resampling of the evaluation samples) is printed beside it.
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


def exact_trajectory(den: Any, x: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact ODE states of ``x`` at ``karras_sigmas(steps)``'s positive levels, for ``calibrate(trajectory=)``."""
    grid = es.karras_sigmas(steps, SIG_MIN, SIG_MAX)[:-1]
    states = [x]
    for a, b in zip(grid[:-1].tolist(), grid[1:].tolist(), strict=True):
        states.append(ode_reference(den, states[-1], [a, b]))
    return grid, torch.stack(states)


def ratio_interval(ours: torch.Tensor, peer: torch.Tensor, ref: torch.Tensor, reps: int = 2000) -> tuple[float, float]:
    """95 % bootstrap interval of RMS(ours) / RMS(peer) over the evaluation samples (paired resampling).

    The per-sample error is heavy-tailed where a few samples end at another mode: on 256 samples the ratio
    moves a lot with the draw, and this interval says how much."""
    eo = ((ours - ref) ** 2).reshape(ours.shape[0], -1).mean(1)
    ep = ((peer - ref) ** 2).reshape(peer.shape[0], -1).mean(1)
    idx = torch.randint(0, eo.numel(), (reps, eo.numel()), generator=torch.Generator().manual_seed(0))
    r = (eo[idx].mean(1) / ep[idx].mean(1)).sqrt()
    q = torch.quantile(r, torch.tensor([0.025, 0.975], dtype=r.dtype))
    return float(q[0]), float(q[1])


def sample(f: Any, den: Any, x0: torch.Tensor, sig: torch.Tensor) -> torch.Tensor | None:
    """A sampler's float64 output from ``x0`` (None where it raises: a peer that refuses a schedule)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return f(den, x0.clone(), sig).double()
    except Exception:
        return None


def error(out: torch.Tensor | None, ref: torch.Tensor) -> float:
    e = math.inf if out is None else sa.rms(out, ref)
    return e if math.isfinite(e) else math.inf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nfe", type=int, nargs="+", default=[3, 4, 5, 6, 8, 10])
    ap.add_argument("--sampler", default="ipndm:order=4", help="registry label of the calibrated solver")
    ap.add_argument(
        "--batch", type=int, default=256,
        help="evaluation batch (256: solvers_accuracy's, seed 0; other sizes: drawn from seed 10, same problems)",
    )  # fmt: skip
    ap.add_argument("--calib-batch", type=int, default=1024, help="calibration batch (seed 1)")
    ap.add_argument("--max-evals", type=int, default=500, help="sampling runs per calibration")
    ap.add_argument("--no-shifts", action="store_true", help="fit direction scales only (no sigma multipliers)")
    ap.add_argument("--starts", type=int, default=1, help="calibrate(starts=): multi-start, best calibration error")
    ap.add_argument("--problems", nargs="*", default=None)
    ap.add_argument(
        "--trajectory", action="store_true",
        help="calibrate(trajectory=...): also match the exact ODE states at the levels (exact solution on 64 levels)",
    )  # fmt: skip
    ap.add_argument(
        "--rule-batch", type=int, default=0, metavar="CAP",
        help="apply the batch-size rule: where a calibration's min_batch exceeds its batch, calibrate again on "
        "min(the rule's size rounded up to a power of 2, CAP) samples (the first --calib-batch the same, the rest "
        "from seed 100 + problem index); 0: off",
    )  # fmt: skip
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
    # The problems' data come from solvers_accuracy's one generator, which also draws their 256-sample batches:
    # build them at 256 always (the same problems whatever --batch), and draw another evaluation batch apart.
    g_eval = torch.Generator().manual_seed(10)
    for k_problem, (pname, (den, z)) in enumerate(sa.problems(256).items()):
        if args.batch != 256:
            z = torch.randn((args.batch, *z.shape[1:]), generator=g_eval, dtype=z.dtype)
        # drawn for every problem in turn, selected or not: a subset run calibrates on the full run's batches
        zc = torch.randn((args.calib_batch, *z.shape[1:]), generator=g, dtype=z.dtype)
        if args.problems and pname not in args.problems:
            continue
        x0 = z * SIG_MAX
        ref = ode_reference(den, x0, [SIG_MAX, SIG_MIN, 0.0])
        afs = closed_form(den)
        batches: dict[int, tuple[torch.Tensor, dict[str, Any]]] = {}

        def calibration_batch(b: int, den: Any = den, zc: torch.Tensor = zc, k: int = k_problem,
                              batches: dict = batches) -> tuple[torch.Tensor, dict[str, Any]]:  # fmt: skip
            """The first b calibration samples: the --calib-batch from seed 1, then more from seed 100 + k."""
            if b not in batches:
                more = max(b - zc.shape[0], 0)
                g_more = torch.Generator().manual_seed(100 + k)
                z_all = torch.cat([zc, torch.randn((more, *zc.shape[1:]), generator=g_more, dtype=zc.dtype)])
                xb = z_all[:b] * SIG_MAX
                opts_b: dict[str, Any] = {"reference": ode_reference(den, xb, [SIG_MAX, SIG_MIN, 0.0])}
                if args.trajectory:
                    opts_b["trajectory"] = exact_trajectory(den, xb, 64)
                batches[b] = (xb, opts_b)
            return batches[b]

        rows: dict[str, Any] = {}
        print(f"\n## {pname} (RMS error on the {z.shape[0]} evaluation samples; B: calibration samples)")
        print("| NFE | calibrated | best peer | peer error | ratio (95 % bootstrap) | calib. s | runs | B | B_min |")
        print("|---|---|---|---|---|---|---|---|---|")
        for nfe in args.nfe:
            b = args.calib_batch
            first = None
            while True:
                xc, copts = calibration_batch(b)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    cal = es.calibrate(den, xc, nfe, sampler=name, afs=afs, sigma_min=SIG_MIN,
                                       fit_shifts=not args.no_shifts, max_evals=args.max_evals, starts=args.starts,
                                       **copts, **knobs)  # fmt: skip
                first = first or cal
                want = min(1 << max(cal.min_batch - 1, 1).bit_length(), args.rule_batch)
                if cal.min_batch <= b or want <= b:
                    break
                b = want
            opts = cal.run_options(afs)
            ours_out = sample(lambda d, x, s, c=cal, o=opts: f(d, x, s, **c.knobs, **o), den, x0, cal.sigmas)
            ours = error(ours_out, ref)
            prow: dict[str, float] = {}
            pout: dict[str, torch.Tensor] = {}  # each peer's better output, kept for the interval
            for k, (pf, per) in peers.items():
                n = sa.steps_for(nfe, per)
                for sig in (es.karras_sigmas(n, SIG_MIN, SIG_MAX), es.loglinear_sigmas(n, SIG_MIN, SIG_MAX)):
                    out = sample(pf, den, x0, sig)
                    e = error(out, ref)
                    if out is not None and e < prow.get(k, math.inf):
                        prow[k], pout[k] = e, out
                prow.setdefault(k, math.inf)
            best = min(((v, k) for k, v in prow.items()), default=(math.nan, "-"))
            lo_hi = (math.nan, math.nan)
            if ours_out is not None and best[1] in pout:
                lo_hi = ratio_interval(ours_out, pout[best[1]], ref)
            rows[str(nfe)] = {
                "calibrated": ours, "calib_rms": math.sqrt(cal.error), "seconds": cal.seconds,
                "cpu_seconds": cal.cpu_seconds,
                "runs": cal.evaluations, "network_calls": cal.network_calls, "reused_calls": cal.reused_calls,
                "min_batch": cal.min_batch, "gap": cal.gap, "sigmas": cal.sigmas.tolist(),
                "direction_scale": cal.direction_scale, "sigma_scale": cal.sigma_scale, "peers": prow,
                "warned": bool(caught), "ratio_95": list(lo_hi), "calib_batch": b,
                "first_batch_min": first.min_batch, "first_batch_calib_rms": math.sqrt(first.error),
            }  # fmt: skip
            print(
                f"| {nfe} | {ours:.2e} | {best[1]} | {best[0]:.2e} | "
                f"{ours / best[0]:.2f} ({lo_hi[0]:.2f}-{lo_hi[1]:.2f}) | {cal.seconds:.0f} | "
                f"{cal.evaluations} | {b} | {cal.min_batch} |",
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
