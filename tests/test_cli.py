"""Command line: help, demo, generate (PNG / npz / JSON), bench on a small problem (fid: tests/test_fid.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edm_samplers.cli import _parse_seeds, main


def test_module_help_runs() -> None:
    r = subprocess.run([sys.executable, "-m", "edm_samplers", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for cmd in ("demo", "generate", "bench", "fid"):
        assert cmd in r.stdout


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


def test_bench_small(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["bench", "--problems", "ring2d", "--samplers", "euler", "heun", "stochastic", "--nfe", "5", "10",
               "--samples", "64", "--no-peers", "--no-plot", "--out", str(tmp_path), "--json"])  # fmt: skip
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    res = data["problems"]["ring2d"]["results"]
    by = {(r["sampler"], r["nfe"]): r for r in res}
    assert by[("euler", 10)]["global_error"] < by[("euler", 5)]["global_error"]
    assert by[("stochastic", 9)]["global_error"] is None and by[("stochastic", 9)]["frechet"] > 0
    assert (tmp_path / "results.json").is_file()
