"""Joint calibration (``calibrate``), its JSON files, and the calibration batch-size rule.

The rule's derivation is checked in its exact case: linear least squares with Gaussian residuals, where the
expected excess of the held-out over the training error is 2 P sigma^2 / (B d) (simulated here)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch

import edm_samplers as es
from edm_samplers.calibration_batch import overfit_gap
from edm_samplers.evaluation import GaussianMixture, ode_reference


def test_rule_matches_least_squares_optimism() -> None:
    # y_b = X_b theta* + noise (d outputs per sample, P shared parameters); fit theta on B samples.
    g = torch.Generator().manual_seed(0)
    b, d, p, sigma, reps = 40, 2, 4, 0.3, 400
    gaps, predicted = [], []
    for _ in range(reps):
        xs = torch.randn(2 * b, d, p, generator=g, dtype=torch.float64)
        ys = xs @ torch.ones(p, dtype=torch.float64) + sigma * torch.randn(2 * b, d, generator=g, dtype=torch.float64)
        theta = torch.linalg.lstsq(xs[:b].reshape(-1, p), ys[:b].reshape(-1)).solution
        res_train = ys[:b] - xs[:b] @ theta
        res_test = ys[b:] - xs[b:] @ theta
        train, test = float((res_train**2).mean()), float((res_test**2).mean())
        gaps.append((test - train) / sigma**2)
        predicted.append(overfit_gap(res_train, -xs[:b]) * train / sigma**2)
    exact = 2 * p / (b * d)  # 0.1
    mean_gap = sum(gaps) / reps
    mean_pred = sum(predicted) / reps
    # 400 replications: the measured mean gap has a standard error of about 0.01 (sd ~0.2 per replication).
    assert abs(mean_gap - exact) < 0.04
    # The estimate from one batch (TIC with sample moments) is unbiased to O(1/B): within 20 % of exact.
    assert abs(mean_pred - exact) < 0.2 * exact


def test_min_calibration_batch_scales_with_the_gap() -> None:
    g = torch.Generator().manual_seed(1)
    r = torch.randn(50, 3, generator=g, dtype=torch.float64)
    jac = torch.randn(50, 3, 2, generator=g, dtype=torch.float64)
    gap = overfit_gap(r, jac)
    assert es.min_calibration_batch(r, jac, 0.1) == math.ceil(gap * 50 / 0.1)
    assert es.min_calibration_batch(r, jac, 0.01) >= es.min_calibration_batch(r, jac, 0.1)
    assert es.min_calibration_batch(torch.zeros(50, 3, dtype=torch.float64), jac) == 1  # nothing to fit
    with pytest.raises(ValueError, match="jacobian must be"):
        es.min_calibration_batch(r, jac[:, :2])
    with pytest.raises(ValueError, match="max_gap must be > 0"):
        es.min_calibration_batch(r, jac, 0.0)


def _ring(batch: int, seed: int) -> tuple[GaussianMixture, torch.Tensor, torch.Tensor]:
    ang = torch.arange(4, dtype=torch.float64) * (math.pi / 2)
    gm = GaussianMixture(torch.stack([ang.cos(), ang.sin()], 1), 0.1)
    x = torch.randn(batch, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 80
    return gm, x, ode_reference(gm, x, [80.0, 0.002, 0.0])


def test_calibrate_improves_counts_and_generalises(tmp_path: Path) -> None:
    gm, xc, refc = _ring(64, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a 64-sample batch is below the rule here
        cal = es.calibrate(gm, xc, 4, sampler="dpmpp_2m", afs=0.71, reference=refc, sigma_min=0.002,
                           fit_shifts=True, max_evals=60)  # fmt: skip
    assert cal.nfe == 4 and cal.sigmas.numel() == 6  # afs: 5 steps for 4 network evaluations
    assert es.count_nfe(cal.sigmas, "dpmpp_2m", afs=0.71) == 4
    assert cal.error < 0.5 * cal.initial_error and cal.evaluations <= 60 and cal.seconds > 0
    assert len(cal.direction_scale or []) == len(cal.sigma_scale or []) == 5
    # held-out seeds: better than the same solver on rho = 7 at the same NFE
    _, x0, ref = _ring(64, 2)
    out = es.dpmpp_2m_sample(gm, x0, cal.sigmas, **cal.run_options())
    base = es.dpmpp_2m_sample(gm, x0, es.karras_sigmas(4, 0.002, 80.0))
    assert float(((out - ref) ** 2).mean()) < 0.5 * float(((base - ref) ** 2).mean())
    # plain JSON round trip; the file is also a schedule file
    path = tmp_path / "cal.json"
    es.save_calibration(path, cal, command="test")
    data = json.loads(path.read_text())
    assert data["sampler"] == "dpmpp_2m" and data["afs"] == 0.71 and data["meta"] == {"command": "test"}
    back = es.load_calibration(path)
    assert torch.equal(back.sigmas, cal.sigmas) and back.direction_scale == cal.direction_scale
    assert back.sigma_scale == cal.sigma_scale and back.nfe == 4
    assert torch.equal(es.load_schedule(path), cal.sigmas)
    assert torch.equal(es.dpmpp_2m_sample(gm, x0, back.sigmas, **back.run_options()), out)


def test_calibrate_errors_and_external_afs(tmp_path: Path) -> None:
    gm, xc, refc = _ring(16, 3)
    with pytest.raises(ValueError, match="calibration needs >= 2"):
        es.calibrate(gm, xc, 1, sampler="euler", reference=refc)
    with pytest.raises(TypeError, match="unknown option"):
        es.calibrate(gm, xc, 4, sampler="euler", reference=refc, order=3)
    closed = es.GaussianDenoiser(0.0, 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        cal = es.calibrate(gm, xc, 3, sampler="euler", afs=closed, reference=refc, fit_scales=False, max_evals=20)
    assert cal.afs == "external" and cal.direction_scale is None and cal.sigma_scale is None
    with pytest.raises(ValueError, match="pass it again"):
        cal.run_options()
    assert cal.run_options(closed) == {"afs": closed}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"sigmas": [80.0, 1.0, 0.0], "direction_scale": [1.0], "sampler": "euler",
                                "knobs": {}, "afs": None}))  # fmt: skip
    with pytest.raises(ValueError, match=r"direction_scale in .* must be 2 numbers"):
        es.load_calibration(path)


def test_searches_warn_when_the_batch_is_too_small() -> None:
    gm, x, ref = _ring(4, 0)
    with pytest.warns(UserWarning, match="calibration batch \\(4 samples\\) is too small"):
        r = es.optimize_schedule(gm, x, 5, sampler="euler", reference=ref, sigma_min=0.002, max_evals=40)
    assert r.evaluations <= 40
    # One Gaussian in 16 dimensions: every sample's error moves alike; 64 samples are plenty, no warning.
    gauss = GaussianMixture(torch.zeros(1, 16, dtype=torch.float64), 0.5)
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(6), dtype=torch.float64) * 80
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        es.optimize_schedule(gauss, x, 4, sampler="euler", reference=ode_reference(gauss, x, [80.0, 0.002, 0.0]),
                             sigma_min=0.002, max_evals=40)  # fmt: skip


def test_multi_start_keeps_the_best_calibration_and_sums_the_cost() -> None:
    gm, xc, refc = _ring(32, 4)
    kw: dict = dict(sampler="euler", reference=refc, sigma_min=0.002, max_evals=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 32 samples are below the rule here
        one = es.calibrate(gm, xc, 3, **kw)
        flat = es.calibrate(gm, xc, 3, init=es.karras_sigmas(3, 0.002, 80.0, rho=3.0), **kw)
        both = es.calibrate(gm, xc, 3, starts=2, **kw)
    # start 1 is the default (rho = 7), start 2 rho = 3: the result is the lower calibration error of the two
    assert both.error == min(one.error, flat.error) and both.loss == both.error
    assert both.evaluations == one.evaluations + flat.evaluations
    assert both.initial_error == one.initial_error
    with pytest.raises(ValueError, match="starts"):
        es.calibrate(gm, xc, 3, starts=0, **kw)


def test_moment_objective_matches_its_formula() -> None:
    gm, xc, refc = _ring(48, 5)

    def feats(y: torch.Tensor) -> torch.Tensor:  # any map [B, d] -> [B, F]
        return torch.cat([y, y.abs()], 1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        cal = es.calibrate(gm, xc, 3, sampler="dpmpp_2m", reference=refc, sigma_min=0.002, max_evals=24,
                           fit_shifts=True, features=feats, moment_weight=0.5)  # fmt: skip
    out = es.dpmpp_2m_sample(gm, xc, cal.sigmas, **cal.run_options())
    # independent transcription of the documented objective
    fo, fr = feats(out), feats(refc)
    co, cr = torch.cov(fo.T), torch.cov(fr.T)
    mse = float(((out - refc) ** 2).mean())
    mom = float(((fo.mean(0) - fr.mean(0)) ** 2).sum() / cr.trace() + ((co - cr) ** 2).sum() / (cr**2).sum())
    # tolerance: the same float64 quantities summed in another order (round-off ~1e-15 relative)
    assert cal.error == pytest.approx(mse, rel=1e-9)
    assert cal.loss == pytest.approx(mse / float((refc**2).mean()) + 0.5 * mom, rel=1e-9)
    assert cal.history[-1] == cal.loss
    with pytest.raises(TypeError, match="features must be a callable"):
        es.calibrate(gm, xc, 3, reference=refc, features=3)
    with pytest.raises(ValueError, match="moment_weight"):
        es.calibrate(gm, xc, 3, reference=refc, features=feats, moment_weight=-1.0)


def test_call_memo_reuses_exactly_the_unchanged_prefix() -> None:
    from edm_samplers._memo import CallMemo

    gm, x, _ = _ring(8, 7)
    sig = es.karras_sigmas(5, 0.002, 80.0)
    memo = CallMemo(gm)
    assert memo.means is gm.means  # attributes come from the wrapped denoiser
    assert not hasattr(memo, "sigma_data")
    memo.start()
    base = es.dpmpp_2m_sample(memo, x, sig, direction_scale=[1.0] * 5)
    memo.keep()
    assert (memo.calls, memo.hits) == (5, 0)
    # call j's direction scale acts on its output: calls 0..j repeat the base run bitwise; its sigma multiplier
    # changes call j itself: calls 0..j-1 are re-used
    for option, reused in (("direction_scale", 1), ("sigma_scale", 0)):
        for j in range(5):
            coef = [1.0] * 5
            coef[j] = 1.01
            memo.start()
            hits = memo.hits
            out = es.dpmpp_2m_sample(memo, x, sig, **{option: coef})
            assert torch.equal(out, es.dpmpp_2m_sample(gm, x, sig, **{option: coef}))
            assert memo.hits - hits == j + reused
    memo.start()
    hits = memo.hits
    es.dpmpp_2m_sample(memo, x + 1e-9, sig)  # another input: nothing is re-used
    assert memo.hits == hits
    assert torch.equal(base, es.dpmpp_2m_sample(gm, x, sig))


def test_calibration_results_do_not_depend_on_the_call_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from edm_samplers._memo import CallMemo

    # the package exports functions of the same names: take the modules themselves
    cal_mod, opt_mod = sys.modules["edm_samplers.calibrate"], sys.modules["edm_samplers.schedule_opt"]

    gm, xc, refc = _ring(32, 8)
    kw: dict = dict(sampler="dpmpp_2m", afs=0.71, reference=refc, sigma_min=0.002, fit_shifts=True, max_evals=50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 32 samples are below the rule here
        memo = es.calibrate(gm, xc, 4, **kw)

        class NoReuse(CallMemo):
            def __call__(self, x: torch.Tensor, sigma: torch.Tensor, /, **cond: object) -> torch.Tensor:
                self.diverged = True
                return super().__call__(x, sigma, **cond)

        monkeypatch.setattr(cal_mod, "CallMemo", NoReuse)
        monkeypatch.setattr(opt_mod, "CallMemo", NoReuse)
        plain = es.calibrate(gm, xc, 4, **kw)
    assert torch.equal(memo.sigmas, plain.sigmas) and memo.error == plain.error and memo.loss == plain.loss
    assert memo.direction_scale == plain.direction_scale and memo.sigma_scale == plain.sigma_scale
    assert memo.evaluations == plain.evaluations and plain.reused_calls == 0
    # every run makes 4 network calls (afs: evaluation 0 is the closed form). One Jacobian re-uses at least
    # 16: the column of evaluation j's direction scale repeats network calls 1..j (j = 1..4: 10 calls), the
    # column of its sigma multiplier calls 1..j-1 (6 calls)
    assert memo.network_calls + memo.reused_calls == plain.network_calls == 4 * plain.evaluations
    assert memo.reused_calls >= 16


def _exact_trajectory(gm: GaussianMixture, x: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    grid = es.karras_sigmas(steps, 0.002, 80.0)[:-1]
    states = [x]
    for a, b in zip(grid[:-1].tolist(), grid[1:].tolist(), strict=True):
        states.append(ode_reference(gm, states[-1], [a, b]))
    return grid, torch.stack(states)


def test_trajectory_objective_matches_its_formula() -> None:
    import numpy as np

    gm, xc, refc = _ring(48, 5)
    grid, states = _exact_trajectory(gm, xc, 24)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        cal = es.calibrate(gm, xc, 3, sampler="dpmpp_2m", reference=refc, sigma_min=0.002, max_evals=24,
                           fit_shifts=True, trajectory=(grid, states), trajectory_weight=0.7)  # fmt: skip
    seen: list[tuple[float, torch.Tensor]] = []
    out = es.dpmpp_2m_sample(gm, xc, cal.sigmas, callback=lambda i: seen.append((i.sigma_next, i.x_next)),
                             **cal.run_options())  # fmt: skip
    inner = [(s, x) for s, x in seen if 0 < s < 80.0]
    assert len(inner) == cal.sigmas.numel() - 2  # every level the sampler lands on but sigma_max and 0
    # independent transcription: numpy's interpolation, linear in sigma, element by element
    g = grid.numpy()[::-1]
    flat = states.reshape(states.shape[0], -1).numpy()[::-1]
    s2 = float((refc**2).mean())
    terms = []
    for s, x in inner:
        r = np.array([np.interp(s, g, flat[:, e]) for e in range(flat.shape[1])])
        terms.append(s2 / (s2 + s * s) * float(np.mean((x.reshape(-1).numpy() - r) ** 2)))
    mse = float(((out - refc) ** 2).mean())
    # tolerance: the same float64 quantities summed in another order (round-off ~1e-15 relative)
    assert cal.error == pytest.approx(mse, rel=1e-9)
    assert cal.loss == pytest.approx(mse + 0.7 * sum(terms) / len(terms), rel=1e-9)
    assert cal.history[-1] == cal.loss


def test_trajectory_computed_here_and_bad_trajectories() -> None:
    gm, xc, _ = _ring(16, 9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        cal = es.calibrate(gm, xc, 3, sampler="euler", sigma_min=0.002, max_evals=8, trajectory=6)
    # no reference given: the end of the trajectory computed here (Heun, 6 steps of rho = 7 from 80) is it
    heun = es.heun_sample(gm, xc, es.karras_sigmas(6, 0.002, 80.0))
    out = es.euler_sample(gm, xc, cal.sigmas, **cal.run_options())
    assert cal.error == pytest.approx(float(((out - heun) ** 2).mean()), rel=1e-9)
    grid, states = _exact_trajectory(gm, xc, 6)
    kw: dict = dict(sampler="euler", reference=heun, max_evals=4)
    with pytest.raises(ValueError, match="strictly decreasing positive"):
        es.calibrate(gm, xc, 3, trajectory=(grid.flip(0), states), **kw)
    with pytest.raises(ValueError, match=r"shape \[len\(sigmas\), \*x.shape\]"):
        es.calibrate(gm, xc, 3, trajectory=(grid, states[:, :4]), **kw)
    with pytest.raises(TypeError, match="trajectory must be"):
        es.calibrate(gm, xc, 3, trajectory=(grid, states, states), **kw)
    with pytest.raises(ValueError, match="trajectory_weight"):
        es.calibrate(gm, xc, 3, trajectory=(grid, states), trajectory_weight=-1.0, **kw)
    with pytest.raises(ValueError, match="trajectory"):
        es.calibrate(gm, xc, 3, trajectory=1, **kw)
