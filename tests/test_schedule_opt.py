"""Schedule optimiser: monotone improvement, valid schedules, JSON round trip, errors."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import pytest
import torch

from edm_samplers import euler_sample, heun_sample, karras_sigmas
from edm_samplers.evaluation import GaussianMixture
from edm_samplers.schedule_opt import load_schedule, optimize_schedule, save_schedule


@functools.cache
def _problem() -> tuple[GaussianMixture, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    gm = GaussianMixture(torch.randn(4, 4, generator=g, dtype=torch.float64), 0.1)
    x = torch.randn(16, 4, generator=g, dtype=torch.float64) * 80
    return gm, x, heun_sample(gm, x, karras_sigmas(256))


@pytest.mark.parametrize("sampler", [euler_sample, heun_sample])
def test_search_improves_and_returns_valid_schedule(sampler) -> None:  # type: ignore[no-untyped-def]
    gm, x, ref = _problem()
    r = optimize_schedule(gm, x, 4, sampler=sampler, reference=ref, max_evals=40)
    s = r.sigmas
    assert s.shape == (5,) and s[0].item() == 80.0 and s[-1].item() == 0.0
    assert bool((s[1:] < s[:-1]).all())
    assert r.error <= r.initial_error and r.evaluations <= 40
    assert r.history == sorted(r.history, reverse=True), "accepted moves only decrease the objective"
    # Re-evaluating the returned schedule reproduces the reported objective (the search is deterministic).
    err = float(torch.mean((sampler(gm, x, s) - ref) ** 2))
    assert err == pytest.approx(r.error, rel=1e-9)
    # Four steps from sigma = 80 leave plenty of room: the search must find a clearly better schedule.
    assert r.error < 0.7 * r.initial_error


def test_init_and_reference_are_used() -> None:
    gm, x, ref = _problem()
    init = karras_sigmas(3, 0.01, 80.0)
    r = optimize_schedule(gm, x, 3, init=init, reference=ref, max_evals=1)
    assert torch.equal(r.sigmas[:-1].log().round(decimals=9), init[:-1].log().round(decimals=9))
    assert r.evaluations == 1 and r.error == r.initial_error


def test_sigma_min_pins_the_last_level() -> None:
    gm, x, ref = _problem()
    r = optimize_schedule(gm, x, 4, reference=ref, sigma_min=0.01, max_evals=40)
    s = r.sigmas
    # Both ends are fixed exactly (not up to the softmax round trip), the inner levels move.
    assert s[0].item() == 80.0 and s[-2].item() == 0.01 and s[-1].item() == 0.0
    assert bool((s[1:] < s[:-1]).all())
    assert r.error < r.initial_error
    assert r.initial_error == pytest.approx(float(torch.mean((heun_sample(gm, x, karras_sigmas(4, 0.01)) - ref) ** 2)))
    # Two levels pinned at both ends leave nothing to search: the initial schedule comes back.
    r2 = optimize_schedule(gm, x, 2, reference=ref, sigma_min=0.01, max_evals=20)
    assert torch.allclose(r2.sigmas, karras_sigmas(2, 0.01), rtol=1e-12)


def test_save_load_roundtrip(tmp_path: Path) -> None:
    s = karras_sigmas(6)
    p = tmp_path / "s.json"
    save_schedule(p, s, solver="heun", nfe=11)
    data = json.loads(p.read_text())
    assert data["solver"] == "heun" and data["nfe"] == 11
    assert torch.equal(load_schedule(p), s)
    p.write_text(json.dumps([3.0, 1.0, 0.0]))
    assert load_schedule(p).tolist() == [3.0, 1.0, 0.0]
    p.write_text(json.dumps([1.0, 3.0, 0.0]))
    with pytest.raises(ValueError, match="non-increasing"):
        load_schedule(p)


def test_errors() -> None:
    gm, x, ref = _problem()
    with pytest.raises(ValueError, match="num_steps must be >= 2"):
        optimize_schedule(gm, x, 1, reference=ref)
    with pytest.raises(ValueError, match="init must have num_steps"):
        optimize_schedule(gm, x, 3, reference=ref, init=karras_sigmas(4))
    with pytest.raises(ValueError, match="must end in 0"):
        optimize_schedule(gm, x, 3, init=torch.tensor([80.0, 10.0, 1.0, 0.5]))
    with pytest.raises(ValueError, match="sigma_floor must be below"):
        optimize_schedule(gm, x, 3, reference=ref, sigma_floor=1.0)
    with pytest.raises(ValueError, match="sigma_min must be below sigma_max"):
        optimize_schedule(gm, x, 3, reference=ref, sigma_min=100.0)
    with pytest.raises(ValueError, match="must equal sigma_min"):
        optimize_schedule(gm, x, 3, reference=ref, init=karras_sigmas(3, 0.01), sigma_min=0.002)
    with pytest.raises(ValueError, match="sigma_min must be"):
        optimize_schedule(gm, x, 3, reference=ref, sigma_min=-1.0)
    with pytest.raises(ValueError, match="reference must be a tensor"):
        optimize_schedule(gm, x, 3, reference=x[:2])


# ---- issue 11: no bad input gives a silent wrong answer -----------------------------------------


def test_load_schedule_rejects_non_numbers_and_bad_dtypes(tmp_path: Path) -> None:
    p = tmp_path / "s.json"
    for content in ([True, False], ["1.0", "0"], {"sigmas": [2.0, None, 0.0]}, [[1.0], [0.0]]):
        p.write_text(json.dumps(content))
        with pytest.raises(ValueError, match=r"sigmas in '.*s\.json' must be a JSON list of numbers"):
            load_schedule(p)
    p.write_text("[80.0, 1.0, 0.0]")
    with pytest.raises(TypeError, match=r"dtype must be a floating torch.dtype.*torch.int64"):
        load_schedule(p, dtype=torch.int64)  # gave tensor([80, 1, 0]), truncated
    p.write_text("[1.0001, 1.0, 0.0]")
    with pytest.raises(ValueError, match=r"cannot be held by dtype=torch.float16"):
        load_schedule(p, dtype=torch.float16)  # both levels are 1.0 in float16
    p.write_text("[1e-30, 0.0]")
    with pytest.raises(ValueError, match=r"cannot be held by dtype=torch.float16"):
        load_schedule(p, dtype=torch.float16)  # a 0 before the end
    assert load_schedule(p, dtype=torch.float32).dtype == torch.float32


def test_load_schedule_names_the_file_on_malformed_json(tmp_path: Path) -> None:
    p = tmp_path / "broken.json"
    p.write_text("[80.0, ")
    with pytest.raises(ValueError, match=r"'.*broken\.json' is not a JSON schedule file"):
        load_schedule(p)
    p.write_text('{"levels": [1.0, 0.0]}')
    with pytest.raises(ValueError, match=r"broken\.json' holds a JSON object without a 'sigmas' entry"):
        load_schedule(p)
    p.write_bytes(b"\xff\xfe[")
    with pytest.raises(ValueError, match=r"broken\.json' is not a JSON schedule file"):
        load_schedule(p)
    p.write_text("[80.0, NaN, 0.0]")
    with pytest.raises(ValueError, match=r"sigmas in '.*broken\.json' must be finite"):
        load_schedule(p)
    with pytest.raises(TypeError, match=r"path must be a str or os.PathLike"):
        load_schedule(3)  # type: ignore[arg-type]  # open(3) would read file descriptor 3


def test_save_schedule_is_atomic(tmp_path: Path) -> None:
    p = tmp_path / "s.json"
    save_schedule(p, karras_sigmas(3), solver="heun", nfe=5)
    before = p.read_bytes()
    with pytest.raises(TypeError, match=r"metadata \['m'\] must be plain JSON.*nothing was written"):
        save_schedule(p, karras_sigmas(4), m=object())  # used to leave a truncated file behind
    with pytest.raises(ValueError, match=r"metadata \['m'\] must be plain JSON"):
        save_schedule(p, karras_sigmas(4), m=float("nan"))  # strict JSON has no NaN
    assert p.read_bytes() == before
    assert sorted(q.name for q in tmp_path.iterdir()) == ["s.json"], "no temporary file left behind"
    with pytest.raises(TypeError, match=r"path must be a str or os.PathLike"):
        save_schedule(1, karras_sigmas(3))  # type: ignore[arg-type]  # open(1, "w") would write to stdout
    save_schedule(p, karras_sigmas(4), note="replaced")
    assert json.loads(p.read_text())["note"] == "replaced"
    assert torch.equal(load_schedule(p), karras_sigmas(4))


def test_save_schedule_keeps_the_old_file_if_the_write_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "s.json"
    save_schedule(p, karras_sigmas(3))
    before = p.read_bytes()

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match=r"disk full"):
        save_schedule(p, karras_sigmas(5))
    assert p.read_bytes() == before
    assert sorted(q.name for q in tmp_path.iterdir()) == ["s.json"]


def test_optimize_schedule_raises_on_a_nan_denoiser() -> None:
    gm, x, ref = _problem()

    def nan_den(x: torch.Tensor, sigma: torch.Tensor, **cond: object) -> torch.Tensor:
        return x * float("nan")

    # It returned the initial schedule with error=inf and no error.
    at_80 = r"denoiser nan_den returned non-finite values at sigma=80\.0 \(step 0\)"
    with pytest.raises(FloatingPointError, match=r"heun_sample on the initial schedule .* " + at_80):
        optimize_schedule(nan_den, x, 3, reference=ref, max_evals=5)
    with pytest.raises(FloatingPointError, match=r"the reference solution .* " + at_80):
        optimize_schedule(nan_den, x, 3, max_evals=5)

    def low_nan(x: torch.Tensor, sigma: torch.Tensor, **cond: object) -> torch.Tensor:
        out = gm(x, sigma)
        return torch.where(sigma.reshape(-1, 1) < 1.0, out * float("nan"), out)

    with pytest.raises(
        FloatingPointError, match=r"denoiser low_nan returned non-finite values at sigma=0\.05 \(step 2\)"
    ):
        optimize_schedule(low_nan, x, 3, reference=ref, init=karras_sigmas(3, 0.05, 80.0), sampler=euler_sample)


def test_optimize_schedule_rejects_non_finite_inputs() -> None:
    gm, x, ref = _problem()
    with pytest.raises(ValueError, match=r"reference must be a finite floating-point tensor"):
        optimize_schedule(gm, x, 3, reference=ref * float("nan"), max_evals=5)
    with pytest.raises(ValueError, match=r"x .* must be finite"):
        optimize_schedule(gm, x * float("inf"), 3, reference=ref, max_evals=5)
