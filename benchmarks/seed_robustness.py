"""How many seeds fail each statistical check of the test suite?

The project's rule: a statistical test holds for at least 999 of 1000 seeds. Each check below is the
core of a test, imported from the test file itself (``check_*(..., seed)`` functions that the tests call
with a few fixed seeds), so this script and the suite cannot drift apart. Every check runs over seeds
0..N-1 (``--seeds``, default 1000) and the script reports, per check, the number of failed seeds
(AssertionError), of errors (anything else), the range of the statistics the check returns (its
margins), and the time per seed.

Three checks are *replicas* (marked so): the cores of tests in files this script's author did not own
(tests/test_guidance.py, tests/test_precond.py, tests/test_models.py), which still run one fixed seed.
They are transcribed here to measure them; if those tests change, change the replicas too.

    python benchmarks/seed_robustness.py                       # everything, 1000 seeds (~30 min on 1 core)
    python benchmarks/seed_robustness.py --only ks --seeds 200 # a subset
    python benchmarks/seed_robustness.py --json seeds.json

Results: docs/testing-statistics.md.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_augment
import test_counter_noise
import test_loss
import test_metrics
from edm_samplers import edm_scalings, heun_sample, karras_sigmas
from edm_samplers.evaluation import GaussianMixture, frechet_distance
from edm_samplers.guidance import guided

Check = Callable[[int], "dict[str, float] | None"]


# ---- replicas of tests in files owned elsewhere (one fixed seed there) ------------------------------------


def replica_guidance_std(seed: int) -> dict[str, float]:
    """tests/test_guidance.py::test_cfg_guide_cond_and_sampling, the sampling half."""
    mu = torch.zeros(1, 2, dtype=torch.float64)
    sharp, wide = GaussianMixture(mu, 0.5), GaussianMixture(mu, 1.0)
    x = torch.randn(4000, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 80
    sig = karras_sigmas(32)
    plain = float(heun_sample(sharp, x, sig).std())
    auto = float(heun_sample(guided(sharp, wide, 2.0), x, sig).std())
    assert abs(plain / 0.5 - 1) <= 0.05
    assert auto < 0.45
    return {"plain_std": plain, "auto_std": auto}


def replica_precond_target_variance(seed: int) -> dict[str, float]:
    """tests/test_precond.py::test_edm_target_has_unit_variance_empirically at sigma = 1, sigma_data = 0.5
    (the target is N(0, 1) for every sigma and sigma_data, so the statistic's law does not depend on them)."""
    sigma, sd = 1.0, 0.5
    g = torch.Generator().manual_seed(seed)
    y = sd * torch.randn(200_000, generator=g, dtype=torch.float64)
    n = sigma * torch.randn(200_000, generator=g, dtype=torch.float64)
    c_skip, c_out, _, _ = edm_scalings(torch.tensor(sigma, dtype=torch.float64), sd)
    var = float(((y - c_skip * (y + n)) / c_out).var())
    assert abs(var - 1) <= 0.016
    return {"variance": var}


def replica_models_frechet(seed: int) -> dict[str, float]:
    """tests/test_models.py::test_frechet_distance_of_samples: N(0, I) vs N(1, 4 I) in 3-d, 40000 samples each."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(40000, 3, generator=g, dtype=torch.float64)
    b = torch.randn(40000, 3, generator=g, dtype=torch.float64) * 2 + 1
    fd = frechet_distance(a, b)
    assert abs(fd - 6.0) <= 0.3
    return {"frechet": fd}


# ---- the registry --------------------------------------------------------------------------------------


def _checks() -> dict[str, Check]:
    c: dict[str, Check] = {}
    for case in range(len(test_loss.CASES)):
        for s in (0.5, 0.2):
            c[f"loss.ideal_minimum[case={case},s={s}]"] = lambda seed, case=case, s=s: test_loss.check_ideal_minimum(
                case, s, seed
            )
    for case in range(len(test_loss.CASES)):
        c[f"loss.perturbed_worse[case={case}]"] = lambda seed, case=case: test_loss.check_perturbed_worse(case, seed)
    c["loss.lognormal_ks"] = test_loss.check_lognormal_ks
    c["loss.loguniform_ks"] = test_loss.check_loguniform_ks
    c["loss.vp_ks"] = test_loss.check_vp_ks
    c["loss.learned_uncertainty"] = test_loss.check_learned_uncertainty
    c["metrics.two_moments_vs_shape"] = test_metrics.check_two_moments_vs_shape
    c["augment.xflip"] = test_augment.check_xflip
    c["augment.quarter_turn"] = test_augment.check_quarter_turn
    c["augment.rotation_labels"] = test_augment.check_rotation_labels
    for name in test_augment.GEOMETRIC:
        c[f"augment.geometric[{name}]"] = lambda seed, name=name: test_augment.check_geometric_statistics(name, seed)
    c["augment.resampling_labels"] = test_augment.check_resampling_labels
    c["counter_noise.statistics"] = test_counter_noise.check_statistics  # the seed is CounterNoise's key
    c["replica.guidance_std"] = replica_guidance_std
    c["replica.precond_target_variance"] = replica_precond_target_variance
    c["replica.models_frechet"] = replica_models_frechet
    return c


def run(name: str, check: Check, seeds: int) -> dict[str, Any]:
    failed: list[int] = []
    errors: dict[int, str] = {}
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    t0 = time.perf_counter()
    for seed in range(seeds):
        try:
            out = check(seed) or {}
        except AssertionError:
            failed.append(seed)
            continue
        except Exception as e:  # a crash is not a statistical failure: report it apart
            errors[seed] = f"{type(e).__name__}: {e}"[:200]
            continue
        for k, v in out.items():
            lo[k], hi[k] = min(lo.get(k, math.inf), v), max(hi.get(k, -math.inf), v)
    dt = time.perf_counter() - t0
    return {
        "check": name,
        "seeds": seeds,
        "failed": len(failed),
        "failed_seeds": failed[:20],
        "errors": len(errors),
        "first_errors": dict(list(errors.items())[:3]),
        "range": {k: [lo[k], hi[k]] for k in lo},
        "seconds_per_seed": dt / max(seeds, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=1000, help="seeds 0..N-1 per check (default 1000)")
    ap.add_argument("--only", default="", help="run the checks whose name contains this substring")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--json", default=None, help="write the results to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    checks = {k: v for k, v in _checks().items() if args.only in k}
    print(f"torch {torch.__version__}, python {platform.python_version()}, {args.seeds} seeds, "
          f"{args.threads} thread(s)", flush=True)  # fmt: skip
    results = []
    for name, check in checks.items():
        r = run(name, check, args.seeds)
        results.append(r)
        ranges = ", ".join(f"{k} [{a:.4g}, {b:.4g}]" for k, (a, b) in r["range"].items())
        print(f"{name:45s} failed {r['failed']:4d}/{r['seeds']}  errors {r['errors']}  "
              f"{r['seconds_per_seed'] * 1e3:7.1f} ms/seed  {ranges}", flush=True)  # fmt: skip
        if r["errors"]:
            print(f"    first errors: {r['first_errors']}", flush=True)
    worst = max((r["failed"] + r["errors"] for r in results), default=0)
    print(f"worst check: {worst} of {args.seeds} seeds failed")
    if args.json:
        Path(args.json).write_text(json.dumps({"torch": torch.__version__, "results": results}, indent=1))


if __name__ == "__main__":
    main()
