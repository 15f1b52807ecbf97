"""The ``order_rule`` knob of the multistep samplers (issue 12 item 7; docs/multistep-defaults.md).

"full" is the old default and "final" the old ``lower_order_final=True``: tests/test_golden.py pins both bit for
bit against outputs recorded before the knob existed. Here: the per-step orders of "auto" on rho = 7 schedules
(the study's table), the rule and its weights on arbitrary schedules, the study's fast accuracy assertion
against Euler, and the faces that read knobs (count_nfe, GraphedSampler, the command line).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings

import edm_samplers as es
from edm_samplers.cli import main
from edm_samplers.solvers import multistep_plan
from edm_samplers.solvers.plans import LOW_ORDER_SIGMA, MAX_LOG_STEP
from strategies import schedules

DATA = ("dpmpp_2m", "dpmpp_3m", "unipc", "dpmpp_2m_sde", "dpmpp_3m_sde")
DERIVATIVE = ("deis", "lms", "ipndm")
NOMINAL = {"dpmpp_2m": 2, "dpmpp_3m": 3, "unipc": 3, "dpmpp_2m_sde": 2, "dpmpp_3m_sde": 3, "deis": 3, "lms": 4,
           "ipndm": 4}  # fmt: skip


def _orders(text: str) -> tuple[int, ...]:
    return tuple(int(c) for c in text.split())


# docs/multistep-defaults.md, "Recommended defaults" and "Other karras lengths" (warm-up included). DEIS's step
# to 0 is Euler through the plan's D column (e = 1), so it uses no history column: 0 where the table says 1.
TABLE = {
    5: {"2m": "1 2 2 1 1", "3m": "1 2 2 1 1", "deis": "1 2 3 2 0", "ab4": "1 2 3 2 1"},
    10: {"2m": "1 2 2 2 2 2 2 1 1 1", "3m": "1 2 3 3 3 2 2 1 1 1", "deis": "1 2 3 3 3 3 3 3 2 0",
         "ab4": "1 2 3 4 4 4 4 3 2 1"},
    20: {"2m": "1 " + "2 " * 13 + "1 " * 6, "3m": "1 2 " + "3 " * 12 + "1 " * 6, "deis": "1 2 " + "3 " * 16 + "2 0",
         "ab4": "1 2 3 " + "4 " * 14 + "3 2 1"},
}  # fmt: skip
ROW = {"dpmpp_2m": "2m", "dpmpp_2m_sde": "2m", "dpmpp_3m": "3m", "dpmpp_3m_sde": "3m", "unipc": "3m", "deis": "deis",
       "lms": "ab4", "ipndm": "ab4"}  # fmt: skip


@pytest.mark.parametrize("n", [5, 10, 20])
@pytest.mark.parametrize("name", DATA + DERIVATIVE)
def test_auto_orders_on_karras_match_the_study(name: str, n: int) -> None:
    assert multistep_plan(es.karras_sigmas(n), name).nb == _orders(TABLE[n][ROW[name]])


def _auto_order(name: str, p: int, s: list[float], i: int) -> int:
    """The rule, transcribed from docs/multistep-defaults.md (warm-up cap i + 1 applied by the caller)."""
    n = len(s) - 1
    if name in DERIVATIVE:
        return min(p, n - i)
    if s[i + 1] <= 0.1:
        return 1
    # h as lambda_{i+1} - lambda_i, lambda = -ln sigma (the plan's form: the same float at h ~ 1)
    return min(p, 2) if -math.log(s[i + 1]) + math.log(s[i]) > 1.0 else p


@settings(max_examples=60, deadline=None)
@given(sig=schedules(min_steps=2, max_steps=14))
def test_auto_rule_and_weights_on_any_schedule(sig: torch.Tensor) -> None:
    s = sig.tolist()
    n = len(s) - 1
    for name in DATA + DERIVATIVE:
        auto = multistep_plan(sig, name)
        full = multistep_plan(sig, name, order_rule="full")
        if name in DERIVATIVE:  # "auto" is "final" for the derivative solvers, bit for bit
            final = multistep_plan(sig, name, order_rule="final")
            assert auto.nb == final.nb and np.array_equal(auto.b, final.b) and np.array_equal(auto.e, final.e)
            continue
        p = NOMINAL[name]
        for i in range(n):
            want = 1 if s[i + 1] == 0 else min(_auto_order(name, p, s, i), i + 1)
            assert auto.nb[i] == want, (name, i)
            k = want
            if s[i + 1] == 0:
                assert auto.b[i, 0] == 1.0
                continue
            h = -math.log(s[i + 1]) + math.log(s[i])  # differences of logs, as the plan (tiny h: a ratio's
            # log would differ in the 5th digit on sigma steps near 1e-10 relative)
            big_b = -math.expm1(-(2.0 if name.endswith("_sde") else 1.0) * h)  # rate 1 + eta, eta = 1 by default
            if k == 1:
                assert auto.b[i, 0] == pytest.approx(big_b, rel=1e-12, abs=1e-300)
            elif k == 2:  # the published 2M weights for every order-2 step (also the exact kM's and warm-up)
                r = (math.log(s[i - 1]) - math.log(s[i])) / h
                want_b = [big_b * (1 + 0.5 / r), -big_b * 0.5 / r]
                # the same float64 formula; only the order of a few roundings may differ: 1e-12 relative
                np.testing.assert_allclose(auto.b[i, :2], want_b, rtol=1e-12, atol=0)
            else:  # nominal order: the full plan's row, bit for bit
                assert full.nb[i] == k and np.array_equal(auto.b[i], full.b[i])
            assert auto.a[i] == full.a[i] and auto.noise[i] == full.noise[i]


def test_thresholds_are_the_documented_constants() -> None:
    assert (LOW_ORDER_SIGMA, MAX_LOG_STEP) == (0.1, 1.0)
    doc = es.unipc_sample.__doc__ or ""
    assert "order_rule" in doc and "sigma <= 0.1" in doc and "> 1.0" in doc and "sigma_data ~ 0.5" in doc


# ---- the study's fast test problem: every ODE multistep sampler beats Euler by >= 5 % at NFE 5, 10, 20 ----


def _mixture() -> es.evaluation.GaussianMixture:
    g = torch.Generator().manual_seed(64)
    f64 = torch.float64
    means = torch.randn(16, 64, generator=g, dtype=f64) * 0.5
    stds = 0.05 + 0.25 * torch.rand(16, generator=g, dtype=f64)
    weights = 0.5 + torch.rand(16, generator=g, dtype=f64)
    return es.evaluation.GaussianMixture(means, stds, weights)


def test_defaults_beat_euler_on_the_mixture() -> None:
    # Paired Frechet distance to a converged solution from the same noise (cancels the finite-sample floor).
    # Margins over 200 disjoint seed sets of 250 (docs/multistep-defaults.md): worst paired ratio 0.87 (lms at
    # NFE 5), mean + 3.1 sd 0.88, ~7 sd below 0.95; at these seeds max 0.82. Old defaults fail (3M/UniPC 6-15x).
    gm = _mixture()
    x0 = es.PerSampleNoise(range(250)).randn((250, 64), dtype=torch.float64, device=torch.device("cpu")) * 80
    ref = es.heun_sample(gm, x0, es.karras_sigmas(64))
    fns = [es.dpmpp_2m_sample, es.dpmpp_3m_sample, es.unipc_sample, es.deis_sample, es.lms_sample, es.ipndm_sample]
    worst = {}
    for nfe in (5, 10, 20):
        s = es.karras_sigmas(nfe)
        euler = es.evaluation.frechet_distance(es.euler_sample(gm, x0, s), ref)
        for f in fns:
            worst[(f.__name__, nfe)] = es.evaluation.frechet_distance(f(gm, x0, s), ref) / euler
    bad = {k: round(v, 3) for k, v in worst.items() if not v < 0.95}
    assert not bad, bad


# ---- faces that read the knob ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DATA + DERIVATIVE)
def test_count_nfe_and_graphed_sampler_follow_the_knob(name: str) -> None:
    sig = es.karras_sigmas(6)
    for rule in ("auto", "full", "final"):
        assert es.count_nfe(sig, name, order_rule=rule) == 6
    gm = _mixture()
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 80
    noise = es.PerSampleNoise([0, 1, 2])
    for rule in ("auto", "full"):
        gs = es.GraphedSampler(gm, sig, (3, 64), sampler=name, dtype=torch.float64, order_rule=rule)
        want = es.solvers.api.sampler_function(name)(gm, x, sig, order_rule=rule, noise=es.PerSampleNoise([0, 1, 2]))
        assert torch.equal(gs(x, noise=noise), want)
        noise = es.PerSampleNoise([0, 1, 2])


def test_cli_opt_order_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["generate", "--model", "ring2d", "--seeds", "0-3", "--sampler", "dpmpp_3m", "--steps", "6", "--json"]
    out: dict[str, Any] = {}
    for rule in ("full", "auto"):
        assert main([*args, "--opt", f"order_rule={rule}", "--out", str(tmp_path / f"{rule}.npz")]) == 0
        assert json.loads(capsys.readouterr().out)["knobs"] == {"order_rule": rule}
        out[rule] = np.load(tmp_path / f"{rule}.npz")["samples"]
    assert main([*args, "--out", str(tmp_path / "default.npz")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "default.npz")["samples"], out["auto"])
    assert not np.array_equal(out["full"], out["auto"])
