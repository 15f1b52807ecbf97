"""Golden outputs: the library reproduces, bit for bit, what every sampler returned before the refactor of
issue 12 (tests/data/golden.safetensors, written by tests/data/make_golden.py).

Each stored case names its kind, denoiser, sampler and the exact knobs it ran with (defaults written out),
and the calls below pass every one of them explicitly: a default that changes on purpose later cannot
change these numbers. Inputs (the Gaussian mixture's parameters, states, schedules, seeds) are stored in
the file too, so a change elsewhere (a schedule builder) cannot move them either. Comparisons are
``torch.equal``: the refactor moves code, not arithmetic. The digits network runs on one CPU thread here
(its convolution kernels may sum in another order with more threads).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

import edm_samplers as es
from edm_samplers._safetensors import load_file, load_metadata

GOLDEN = Path(__file__).resolve().parent / "data" / "golden.safetensors"

SAMPLE_FNS: dict[str, Callable[..., Tensor]] = {
    "euler": es.euler_sample,
    "heun": es.heun_sample,
    "stochastic": es.stochastic_sample,
    "dpmpp_2m": es.dpmpp_2m_sample,
    "dpmpp_3m": es.dpmpp_3m_sample,
    "dpmpp_2m_sde": es.dpmpp_2m_sde_sample,
    "dpmpp_3m_sde": es.dpmpp_3m_sde_sample,
    "deis": es.deis_sample,
    "lms": es.lms_sample,
    "ipndm": es.ipndm_sample,
    "unipc": es.unipc_sample,
    "euler_ancestral": es.euler_ancestral_sample,
    "dpm2": es.dpm2_sample,
}


def build_inputs() -> dict[str, Tensor]:
    """The fixed inputs (used by make_golden.py; the test reads them back from the file)."""
    g = torch.Generator().manual_seed(1234)
    f64 = torch.float64
    gm_seeds = torch.tensor([10, 11, 12])
    digits_seeds = torch.tensor([20])
    return {
        "gm_means": torch.randn(4, 3, generator=g, dtype=f64),
        "gm_stds": 0.05 + 0.3 * torch.rand(4, generator=g, dtype=f64),
        "gm_weights": 0.5 + torch.rand(4, generator=g, dtype=f64),
        "gm_sigmas": es.karras_sigmas(6, 0.002, 80.0).to(f64),
        "gm_x": torch.randn(3, 3, generator=g, dtype=f64) * 80.0,
        "gm_seeds": gm_seeds,
        "gm_shape": torch.tensor([3]),
        "digits_sigmas": es.karras_sigmas(5, 0.002, 80.0).to(f64),
        "digits_x": torch.randn(1, 1, 8, 8, generator=g, dtype=f64) * 80.0,
        "digits_seeds": digits_seeds,
        "digits_shape": torch.tensor([1, 8, 8]),
    }


@functools.cache
def _digits() -> Callable[..., Tensor]:
    return es.models.digits()


def _denoiser(name: str, inputs: dict[str, Tensor]) -> Callable[..., Tensor]:
    if name == "gm":
        return es.evaluation.GaussianMixture(inputs["gm_means"], inputs["gm_stds"], inputs["gm_weights"])
    return _digits()


def run_case(case: dict[str, Any], inputs: dict[str, Tensor]) -> Tensor:
    """One stored case, every knob passed explicitly; float64 state throughout."""
    d = case["denoiser"]
    den = _denoiser(d, inputs)
    x = inputs[f"{d}_x"]
    sigmas = inputs[f"{d}_sigmas"]
    if case["schedule"] == "trunc":
        sigmas = sigmas[:-1]  # stops at sigma_min: the last step is a full one, not the Euler step to 0
    seeds = [int(v) for v in inputs[f"{d}_seeds"]]
    knobs = case["knobs"]
    kind, name = case["kind"], case["sampler"]
    f64 = torch.float64
    if kind == "sample":
        return SAMPLE_FNS[name](den, x, sigmas, noise=es.PerSampleNoise(seeds), dtype=f64, **knobs)
    if kind == "generalized":
        return es.generalized_sample(den, x, sigmas, noise=es.PerSampleNoise(seeds), dtype=f64, **knobs)
    if kind == "generate":
        shape = tuple(int(v) for v in inputs[f"{d}_shape"])
        return es.generate(den, seeds, shape, sigmas, sampler=SAMPLE_FNS[name], dtype=f64, **knobs)
    if kind == "graphed":
        gs = es.GraphedSampler(den, sigmas, tuple(x.shape), sampler=name, dtype=f64, **knobs)
        return gs(x, noise=es.PerSampleNoise(seeds))
    raise AssertionError(f"unknown case kind {kind!r}")


def _cases() -> list[dict[str, Any]]:
    if not GOLDEN.is_file():  # while make_golden.py is writing it
        return []
    cases: list[dict[str, Any]] = json.loads(load_metadata(GOLDEN)["cases"])
    return cases


@pytest.fixture(scope="module")
def golden() -> Iterator[dict[str, Tensor]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield load_file(GOLDEN)
    finally:
        torch.set_num_threads(threads)


def test_golden_covers_every_sampler() -> None:
    cases = _cases()
    for den in ("gm", "digits"):
        for kind, names in (("sample", SAMPLE_FNS), ("graphed", SAMPLE_FNS)):
            got = {c["sampler"] for c in cases if c["kind"] == kind and c["denoiser"] == den}
            assert got == set(names) if kind == "sample" else got <= set(names)
        forms = {(c["knobs"]["schedule"], c["knobs"]["scaling"]) for c in cases if c["kind"] == "generalized"}
        assert {("edm", "none"), ("vp", "vp"), ("ve", "none")} <= forms


@pytest.mark.parametrize("case", _cases(), ids=lambda c: f"{c['key'][4:]}-{c['kind']}-{c['denoiser']}-{c['sampler']}")
def test_golden(case: dict[str, Any], golden: dict[str, Tensor]) -> None:
    inputs = {k[3:]: v for k, v in golden.items() if k.startswith("in/")}
    with torch.no_grad():
        out = run_case(case, inputs)
    want = golden[case["key"]]
    assert out.dtype == want.dtype == torch.float64
    assert torch.equal(out, want), f"{case['key']}: max abs diff {(out - want).abs().max().item():.3e}"
