"""docs/architecture.md stays true: its toy solver, registered as written there, is known to every face of the
library (the samplers' runtime, generate, GraphedSampler, count_nfe, optimize_schedule, the command line) and
computes what it claims (the explicit midpoint rule = the generalized sampler with alpha = 1/2)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import edm_samplers as es
from edm_samplers.cli import main
from edm_samplers.solvers.registry import REGISTRY
from edm_samplers.solvers.runtime import TABLES

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


@pytest.fixture(scope="module")
def midpoint() -> Iterator[str]:
    text = DOC.read_text()
    block = re.search(r"<!-- example: toy solver.*?-->\n```python\n(.*?)```", text, re.S)
    assert block is not None, "the worked example is missing from docs/architecture.md"
    code = block.group(1)
    assert len(code.strip().splitlines()) <= 40  # a toy solver in a few lines, as the doc promises
    exec(compile(code, str(DOC), "exec"), {})  # registers "midpoint"
    try:
        yield "midpoint"
    finally:
        REGISTRY.pop("midpoint", None)
        TABLES.clear()


def _mixture() -> es.evaluation.GaussianMixture:
    g = torch.Generator().manual_seed(3)
    return es.evaluation.GaussianMixture(torch.randn(4, 3, generator=g, dtype=torch.float64), 0.3)


def test_toy_solver_is_the_midpoint_rule(midpoint: str) -> None:
    gm, sig = _mixture(), es.karras_sigmas(7)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 80
    runner = es.solvers.api.sampler_function(midpoint)
    infos: list[es.StepInfo] = []
    got = runner(gm, x, sig, callback=infos.append)
    want = es.generalized_sample(gm, x, sig, alpha=0.5, noise=es.PerSampleNoise(range(5)))
    # Same rule, d written (x - D) / sigma instead of x / sigma - D / sigma: float64 round-off of states
    # |x| <= ~250 over 13 NFE, far below 1e-9.
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-9)
    assert len(infos) == 7 and torch.equal(infos[-1].x_next, got)
    assert es.count_nfe(sig, midpoint) == 13


def test_every_face_knows_the_toy_solver(midpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gm, sig = _mixture(), es.karras_sigmas(4)
    out = es.generate(gm, [0, 1], (3,), sig, sampler=midpoint, dtype=torch.float64)
    x = es.PerSampleNoise([0, 1]).randn((2, 3), dtype=torch.float64, device=torch.device("cpu")) * 80
    gs = es.GraphedSampler(gm, sig, (2, 3), sampler=midpoint, dtype=torch.float64)
    assert torch.equal(gs(x), out)  # the same prepared loop, bitwise
    with pytest.raises(TypeError, match="midpoint_sample got unknown option"):
        es.generate(gm, [0], (3,), sig, sampler=midpoint, order=2)
    search = es.optimize_schedule(gm, x, 3, sampler=midpoint, max_evals=3)
    assert search.error <= search.initial_error
    args: list[Any] = ["generate", "--model", "ring2d", "--seeds", "0-2", "--sampler", midpoint, "--steps", "3"]
    assert main([*args, "--json", "--out", str(tmp_path / "m.npz")]) == 0
    assert json.loads(capsys.readouterr().out)["nfe_per_sample"] == 5
    assert np.isfinite(np.load(tmp_path / "m.npz")["samples"]).all()
