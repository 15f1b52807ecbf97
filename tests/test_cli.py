"""Command line: help, demo, generate (PNG / npz / JSON; every registry sampler and knob; the same samples as
generate()), the benchmark sweep script on a small problem (fid: tests/test_fid.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import edm_samplers as es
from edm_samplers._named import PROBLEMS, make_sigmas
from edm_samplers.cli import _parse_seeds, main
from edm_samplers.solvers.registry import REGISTRY

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_module_help_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    r = subprocess.run([sys.executable, "-m", "edm_samplers", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for cmd in ("demo", "generate", "fid"):
        assert cmd in r.stdout

    # The NFE sweeps left the installed command for the benchmarks folder (issue 12): its script has the options.
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from bench import build_parser

    assert "--problems" in build_parser().format_help()


def test_parse_seeds() -> None:
    assert _parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    with pytest.raises(Exception, match="empty"):
        _parse_seeds("5-1")


def test_demo_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--samples", "16", "--nfe", "5", "10", "--out", str(tmp_path / "d.png"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {(r["sampler"], r["nfe"]) for r in out["rows"]}
    assert ("heun", 9) in rows and ("euler", 10) in rows
    assert all(r["rel_error"] >= 0 for r in out["rows"])


def test_generate_npz_and_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["generate", "--model", "ring2d", "--seeds", "0-9", "--sampler", "euler", "--steps", "4", "--json"]
    assert main([*args, "--out", str(tmp_path / "a.npz"), "--stats", str(tmp_path / "s.npz")]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["nfe_per_sample"] == 4 and meta["num_samples"] == 10
    a = np.load(tmp_path / "a.npz")
    assert a["samples"].shape == (10, 2) and a["seeds"].tolist() == list(range(10))
    # Per-seed noise: seeds 3..5 alone reproduce rows 3..5, whatever the batch.
    assert main([*args[:4], "3-5", *args[5:], "--batch", "1", "--out", str(tmp_path / "b.npz")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "b.npz")["samples"], a["samples"][3:6])
    with pytest.raises(SystemExit, match="--sampler"):
        main(["generate", "--model", "ring2d", "--sampler", "nope"])
    with pytest.raises(SystemExit, match="--model"):
        main(["generate", "--model", "nope"])


def test_bench_small(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from bench import main as bench_main

    rc = bench_main(["--problems", "ring2d", "--samplers", "euler", "heun", "stochastic", "--nfe", "5", "10",
               "--samples", "64", "--no-peers", "--no-plot", "--out", str(tmp_path), "--json"])  # fmt: skip
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    res = data["problems"]["ring2d"]["results"]
    by = {(r["sampler"], r["nfe"]): r for r in res}
    assert by[("euler", 10)]["global_error"] < by[("euler", 5)]["global_error"]
    assert by[("stochastic", 9)]["global_error"] is None and by[("stochastic", 9)]["frechet"] > 0
    assert (tmp_path / "results.json").is_file()


def test_cli_samples_are_generate_samples(tmp_path: Path) -> None:
    # One seed-to-sample path: the file the command writes holds exactly what generate() returns.
    args = ["generate", "--model", "ring2d", "--seeds", "0-9", "--sampler", "stochastic", "--steps", "5",
            "--opt", "s_churn=20", "solver=euler", "--batch", "4", "--out", str(tmp_path / "a.npz")]  # fmt: skip
    assert main(args) == 0
    p = PROBLEMS["ring2d"]()
    want = es.generate(p.denoiser, range(10), p.shape, make_sigmas("karras", 5), sampler="stochastic",
                       dtype=p.dtype, s_churn=20.0, solver="euler")  # fmt: skip
    np.testing.assert_array_equal(np.load(tmp_path / "a.npz")["samples"], want.to(torch.float32).numpy())


def _cli_value(knob: Any) -> str:
    """A valid non-default value of each knob, written as on the command line."""
    if knob.type == "bool":
        return str(not knob.default).lower()
    if knob.type == "str":
        return next(c for c in knob.choices if c != knob.default)
    if knob.type == "int":
        return str(int(knob.high if knob.default != knob.high else knob.low))
    if knob.name == "s_tmax":
        return "1e9"
    return "0.5" if knob.default != 0.5 else "0.25"


@pytest.mark.parametrize("name", [n for n, s in REGISTRY.items() if not s.guided])  # the CLI models are unguided
def test_generate_every_sampler_and_knob(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = REGISTRY[name]
    opts = [f"{k.name}={_cli_value(k)}" for k in spec.knobs if k.type != "callable"]
    out = tmp_path / "s.npz"
    args = ["generate", "--model", "ring2d", "--seeds", "0-3", "--sampler", name, "--steps", "4", "--json"]
    assert main([*args, "--opt", *opts, "--out", str(out)]) == 0
    meta = json.loads(capsys.readouterr().out)
    knobs = {kv.split("=")[0]: spec.knob(kv.split("=")[0]).parse(kv.split("=")[1]) for kv in opts}
    assert meta["knobs"] == knobs and meta["nfe_per_sample"] == es.count_nfe(make_sigmas("karras", 4), name, **knobs)
    p = PROBLEMS["ring2d"]()
    want = es.generate(p.denoiser, range(4), p.shape, make_sigmas("karras", 4), sampler=name, dtype=p.dtype, **knobs)
    np.testing.assert_array_equal(np.load(out)["samples"], want.to(torch.float32).numpy())


def test_generate_wrong_knob_is_one_line_listing_the_valid_ones() -> None:
    base = ["generate", "--model", "ring2d", "--seeds", "0-1", "--sampler", "unipc", "--steps", "3", "--opt"]
    with pytest.raises(SystemExit) as e:
        main([*base, "eta=1"])
    msg = str(e.value)
    assert "\n" not in msg and "'eta'" in msg and "order (int), order_rule ('auto' | 'full' | 'final')" in msg
    with pytest.raises(SystemExit) as e:
        main([*base, "order=3.5"])
    msg = str(e.value)
    assert "\n" not in msg and "order must be int between 1 and 3, got '3.5'" in msg
    assert "order=int, order_rule='auto' | 'full' | 'final'" in msg
    with pytest.raises(SystemExit, match="order must be between 1 and 3"):
        main([*base, "order=4"])
    with pytest.raises(SystemExit, match="order_rule must be 'auto', 'full' or 'final'"):
        main([*base, "order_rule=maybe"])
    with pytest.raises(SystemExit, match="key=value"):
        main([*base, "order"])
