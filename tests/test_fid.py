"""edm-samplers fid: Inception FID plumbing (folders, on-the-fly generation, reference .npz, torchrun) and
``--model diffusers:PATH``. The Inception network is replaced by a cheap deterministic stand-in with the same
signature (real weights cannot be downloaded here); the real extractor is exercised with random weights."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from edm_samplers import _fid as F
from edm_samplers.cli import main
from edm_samplers.evaluation import FeatureStats


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    # Tiny batches: one thread is as fast, and on a loaded 2-core machine two OpenMP threads were 10x slower.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _standin(images: torch.Tensor, weights: str, device: torch.device) -> torch.Tensor:
    """[N, 3, H, W] uint8 -> [N, 12] float64: 2x2 average pooling per channel (per-sample, batch-invariant)."""
    del weights, device
    assert images.dtype == torch.uint8 and images.ndim == 4 and images.shape[1] == 3
    return torch.nn.functional.adaptive_avg_pool2d(images.to(torch.float64), 2).flatten(1)


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    monkeypatch.setattr(F, "_inception_features", _standin)
    w = tmp_path / "inception.pth"
    w.write_bytes(b"")  # only its existence is checked before the (substituted) network is loaded
    return ["--inception-weights", str(w)]


def _write_pngs(folder: Path, arrays: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arrays):
        Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).save(folder / f"{i:06d}.png")


def _fid_numpy(f1: np.ndarray, f2: np.ndarray) -> float:
    """Independent transcription: ||mu1 - mu2||^2 + tr(C1 + C2 - 2 sqrtm(C1 C2)) with scipy's sqrtm."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    c1, c2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(c1 @ c2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2 - 2 * covmean))


def _run_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main([*args, "--json"]) == 0
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return out


def test_folders_ref_stats_and_save_stats(tmp_path: Path, standin: list[str], capsys: pytest.CaptureFixture[str]):
    rng = np.random.default_rng(0)
    gen = rng.integers(0, 256, (23, 8, 8, 3), dtype=np.uint8)
    ref = (rng.integers(0, 200, (19, 8, 8, 3)) + 40).astype(np.uint8)
    _write_pngs(tmp_path / "gen", gen)
    _write_pngs(tmp_path / "ref" / "000000", ref)  # EDM's nested layout is searched recursively
    base = ["fid", "--images", str(tmp_path / "gen"), "--batch", "5", *standin]
    a = _run_json([*base, "--ref", str(tmp_path / "ref"), "--save-stats", str(tmp_path / "g.npz")], capsys)
    feats = [_standin(torch.from_numpy(x).permute(0, 3, 1, 2), "", torch.device("cpu")).numpy() for x in (gen, ref)]
    # Same features, two square-root routes (eigh of the symmetrised product vs scipy's Schur sqrtm) on
    # 12x12 float64 covariances: agreement to ~1e-9 relative is round-off, far below any real difference.
    assert a["fid"] == pytest.approx(_fid_numpy(*feats), rel=1e-8)
    assert a["num_images"] == 23
    saved = np.load(tmp_path / "g.npz")
    np.testing.assert_allclose(saved["mu"], feats[0].mean(0), rtol=1e-12)  # float64 sums of uint8-derived values
    np.testing.assert_allclose(saved["sigma"], np.cov(feats[0], rowvar=False), rtol=1e-10, atol=1e-9)
    # Reference as statistics (EDM's .npz layout: mu, sigma): the same number, bit for bit.
    _run_json(["fid", "--images", str(tmp_path / "ref"), "--ref", str(tmp_path / "ref"), "--batch", "5",
               *standin, "--save-stats", str(tmp_path / "r.npz")], capsys)  # fmt: skip
    b = _run_json([*base, "--ref-stats", str(tmp_path / "r.npz")], capsys)
    assert b["fid"] == a["fid"]
    # A generated folder against itself as reference: FID 0 up to the eigh square root's round-off.
    c = _run_json([*base, "--ref-stats", str(tmp_path / "g.npz")], capsys)
    assert abs(c["fid"]) < 1e-8 * float(np.trace(saved["sigma"]))


def test_grayscale_images_are_repeated_to_rgb(tmp_path: Path) -> None:
    gray = np.random.default_rng(1).integers(0, 256, (3, 8, 8, 1), dtype=np.uint8)
    _write_pngs(tmp_path / "g", gray)
    _write_pngs(tmp_path / "rgb", np.repeat(gray, 3, axis=-1))
    a, b = (F.read_images(F.list_images(tmp_path / d)) for d in ("g", "rgb"))
    assert a.shape == (3, 3, 8, 8) and a.dtype == torch.uint8
    assert torch.equal(a, b)
    t = torch.from_numpy(gray).permute(0, 3, 1, 2)
    assert torch.equal(F.to_rgb(t), b)


def test_to_uint8_matches_rounding_of_saved_images() -> None:
    x = torch.tensor([-1.5, -1.0, -0.5, 0.0, 0.001, 0.5, 1.0, 2.0]).reshape(1, 1, 2, 4)
    # Independent transcription: clip to [-1, 1], map to [0, 255], round half to even (numpy's rint).
    want = np.rint((np.clip(x.numpy(), -1, 1) + 1) * 127.5).astype(np.uint8)
    assert F.to_uint8(x).numpy().tolist() == want.tolist() == [[[[0, 0, 64, 128], [128, 191, 255, 255]]]]


def test_model_on_the_fly_equals_saved_pngs(tmp_path: Path, standin: list[str], capsys: pytest.CaptureFixture[str]):
    """fid --model digits gives the statistics of the same seeds generated, saved as PNGs and read back."""
    ref = FeatureStats(12).update(torch.rand(30, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    ref.save(tmp_path / "ref.npz")
    run = ["--seeds", "0-10", "--sampler", "euler", "--steps", "3", "--batch", "4"]
    a = _run_json(["fid", "--model", "digits", *run, "--ref-stats", str(tmp_path / "ref.npz"),
                   "--save-stats", str(tmp_path / "a.npz"), *standin], capsys)  # fmt: skip
    assert a["num_images"] == 11 and a["nfe_per_sample"] == 3
    _run_json(["generate", "--model", "digits", *run, "--out", str(tmp_path / "s.npz")], capsys)
    x = np.load(tmp_path / "s.npz")["samples"]  # [11, 1, 8, 8] in [-1, 1]
    u8 = np.rint((np.clip(x, -1, 1) + 1) * 127.5).astype(np.uint8).transpose(0, 2, 3, 1)
    _write_pngs(tmp_path / "png", u8)
    b = _run_json(["fid", "--images", str(tmp_path / "png"), "--batch", "4", "--ref-stats", str(tmp_path / "ref.npz"),
                   "--save-stats", str(tmp_path / "b.npz"), *standin], capsys)  # fmt: skip
    sa, sb = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    np.testing.assert_array_equal(sa["mu"], sb["mu"])  # same uint8 images in the same fixed batches: exact
    np.testing.assert_array_equal(sa["sigma"], sb["sigma"])
    assert a["fid"] == b["fid"]


def test_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, standin: list[str]) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("EDM_SAMPLERS_INCEPTION", raising=False)
    _write_pngs(tmp_path / "img", np.zeros((2, 8, 8, 3), dtype=np.uint8))
    ref = tmp_path / "ref.npz"
    FeatureStats(5).update(torch.randn(4, 5, dtype=torch.float64)).save(ref)
    img = ["fid", "--images", str(tmp_path / "img")]
    expected_home = str(tmp_path / "torch_home" / "hub" / "checkpoints" / F.INCEPTION_FILE)
    with pytest.raises(SystemExit, match="Inception-v3 weights not found") as e:
        main([*img, "--ref-stats", str(ref)])
    assert expected_home in str(e.value) and "Nothing is downloaded" in str(e.value)
    with pytest.raises(SystemExit, match=r"--inception-weights: Inception-v3 weights .*nope\.pth not found"):
        main([*img, "--ref-stats", str(ref), "--inception-weights", str(tmp_path / "nope.pth")])
    monkeypatch.setenv("EDM_SAMPLERS_INCEPTION", str(tmp_path / "env.pth"))
    with pytest.raises(SystemExit, match="EDM_SAMPLERS_INCEPTION"):
        main([*img, "--ref-stats", str(ref)])
    with pytest.raises(SystemExit, match="exactly one of --images"):
        main(["fid", "--ref-stats", str(ref), *standin])
    with pytest.raises(SystemExit, match="exactly one of --ref"):
        main([*img, *standin])
    with pytest.raises(SystemExit, match="no such file"):
        main([*img, "--ref-stats", str(tmp_path / "missing.npz"), *standin])
    np.savez(tmp_path / "bad.npz", mean=np.zeros(3))
    with pytest.raises(SystemExit, match="'mu' and 'sigma'"):
        main([*img, "--ref-stats", str(tmp_path / "bad.npz"), *standin])
    with pytest.raises(SystemExit, match="reference statistics have 5 features, the images 12"):
        main([*img, "--ref-stats", str(ref), *standin])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="at least 2"):
        main(["fid", "--images", str(tmp_path / "empty"), "--ref-stats", str(ref), *standin])
    with pytest.raises(SystemExit, match="image model"):
        main(["fid", "--model", "ring2d", "--seeds", "0-3", "--ref-stats", str(ref), *standin])


def test_real_extractor_loads_local_weights_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch-fidelity's Inception-v3 with a local (here randomly initialised) state dict: [N, 2048] float64."""
    # Skipped (visibly) without the fid extra; test_torch_fidelity_missing_is_named covers that case and
    # test_weights_are_read_once_and_checked the loading logic with a stand-in for the extractor.
    fe = pytest.importorskip(
        "torch_fidelity.feature_extractor_inceptionv3", reason="torch-fidelity (the fid extra) is not installed"
    )
    F._load_inception.cache_clear()
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="not a tensor state dict"):
        F._inception_features(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), str(garbage), torch.device("cpu"))
    # Build random weights without any download: skip the loading step of the constructor once.
    monkeypatch.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
    monkeypatch.setattr(fe, "load_state_dict_from_url", lambda *a, **k: {})
    torch.manual_seed(0)
    state = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).state_dict()
    monkeypatch.undo()
    torch.save(state, tmp_path / F.INCEPTION_FILE)
    imgs = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    f = F._inception_features(imgs, str(tmp_path / F.INCEPTION_FILE), torch.device("cpu"))
    assert f.shape == (2, 2048) and f.dtype == torch.float64 and bool(torch.isfinite(f).all())
    assert bool((f >= 0).all())  # pool3 averages ReLU outputs
    net = F._load_inception(str(tmp_path / F.INCEPTION_FILE), "cpu")
    assert type(net) is fe.FeatureExtractorInceptionV3
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())  # the file's weights, all of them
    F._load_inception.cache_clear()


class _Extractor(torch.nn.Module):
    """Stand-in for torch-fidelity's FeatureExtractorInceptionV3 with its constructor's contract (0.3, 0.4):
    ``torch.load(path, weights_only=False)`` then ``self.load_state_dict(...)``; no path means a download."""

    def __init__(self, name: str, features_list: list[str], feature_extractor_weights_path: Any = None) -> None:
        super().__init__()
        assert (name, features_list) == ("inception-v3-compat", ["2048"])
        self.Mixed_7c = torch.nn.Module()
        self.Mixed_7c.branch_pool = torch.nn.Module()
        self.Mixed_7c.branch_pool.conv = torch.nn.Conv2d(3, 4, 1)
        if feature_extractor_weights_path is None:
            raise AssertionError("the constructor would download the weights")
        self.load_state_dict(torch.load(feature_extractor_weights_path, weights_only=False))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.Mixed_7c.branch_pool.conv(x.float()).mean((2, 3)),)


class _Evil:
    """Unpickling this with weights_only=False would run code; weights_only=True refuses the global."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (print, ("pwned",))


def test_weights_are_read_once_and_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    pkg, mod = types.ModuleType("torch_fidelity"), types.ModuleType("torch_fidelity.feature_extractor_inceptionv3")
    mod.FeatureExtractorInceptionV3 = _Extractor  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch_fidelity", pkg)
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", mod)
    calls: list[tuple[Any, Any]] = []
    real_load = torch.load

    def counting_load(f: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append((f, kwargs.get("weights_only")))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 1).state_dict()
    state = {f"Mixed_7c.branch_pool.conv.{k}": v + 1 for k, v in conv.items()}  # not what the constructor draws
    path = str(tmp_path / F.INCEPTION_FILE)
    torch.save(state, path)
    F._load_inception.cache_clear()
    imgs = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    f = F._inception_features(imgs, path, torch.device("cpu"))
    F._inception_features(imgs, path, torch.device("cpu"))  # cached: no second read
    net = F._load_inception(path, "cpu")
    F._load_inception.cache_clear()
    assert type(net) is _Extractor  # no subclass left behind on the returned network
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    assert f.shape == (2, 4) and f.dtype == torch.float64
    # The file: one torch.load, with weights_only=True. The constructor's own weights_only=False load got
    # an in-memory placeholder, never a path.
    assert [w for p, w in calls if isinstance(p, (str, Path))] == [True]
    assert all(w is True or isinstance(p, io.BytesIO) for p, w in calls)
    # A pickle that would run code is refused before any network is built.
    calls.clear()
    torch.save({**state, "evil": _Evil()}, tmp_path / "evil.pth")
    with pytest.raises(SystemExit, match="not a tensor state dict"):
        F._inception_features(imgs, str(tmp_path / "evil.pth"), torch.device("cpu"))
    assert [w for _, w in calls] == [True]
    F._load_inception.cache_clear()


def test_torch_fidelity_missing_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    F._load_inception.cache_clear()
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", None)
    with pytest.raises(SystemExit, match=r"pip install 'edm-samplers\[fid\]'"):
        F._inception_features(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), str(tmp_path / "w.pth"), torch.device("cpu"))
    F._load_inception.cache_clear()


def _tiny_diffusers(root: Path, bare: bool) -> Any:
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4)  # fmt: skip
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    unet.save_pretrained(root if bare else root / "unet")
    sched.save_pretrained(root if bare else root / "scheduler")
    return unet, sched


def test_generate_and_fid_from_local_diffusers_checkpoint(
    tmp_path: Path, standin: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("diffusers")  # a test extra; CI installs it (pip install 'edm-samplers[test]')
    from edm_samplers import euler_sample, from_diffusers, karras_sigmas
    from edm_samplers.noise import PerSampleNoise

    unet, _ = _tiny_diffusers(tmp_path / "pipe", bare=False)
    run = ["--seeds", "0-2", "--sampler", "euler", "--steps", "3", "--device", "cpu"]
    meta = _run_json(["generate", "--model", f"diffusers:{tmp_path / 'pipe'}", *run, "--out", str(tmp_path / "x.npz")],
                     capsys)  # fmt: skip
    assert meta["num_samples"] == 3 and meta["nfe_per_sample"] == 3
    x = np.load(tmp_path / "x.npz")["samples"]
    assert x.shape == (3, 3, 8, 8) and np.isfinite(x).all()
    # Independent route: DDPM linear betas 1e-4..0.02 -> sigma_t = sqrt((1 - abar_t) / abar_t), range ends.
    abar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    smin, smax = np.sqrt((1 - abar[0]) / abar[0]), np.sqrt((1 - abar[-1]) / abar[-1])
    sig = karras_sigmas(3, float(smin), float(smax))
    lat = PerSampleNoise([0, 1, 2]).randn((3, 3, 8, 8), dtype=torch.float64, device="cpu").to(torch.float32)
    from diffusers import DDPMScheduler

    den = from_diffusers(unet.eval(), DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear"))
    with torch.no_grad():
        want = euler_sample(den, lat * float(sig[0]), sig, dtype=torch.float32)
    # Same network, latents and sampler. diffusers builds alphas_cumprod in float32, this transcription in
    # float64, so the sigma grids differ by ~1e-7 relative; an untrained network amplifies that through 3
    # Euler steps from sigma ~157 (outputs of order 100): 2e-5 relative was seen, 1e-4 bounds it while any
    # wrong range, spacing or prediction type would be off by order 1.
    np.testing.assert_allclose(x, want.numpy(), rtol=1e-4, atol=1e-3)
    with pytest.raises(SystemExit, match="fid --model"):
        main(["generate", "--model", f"diffusers:{tmp_path / 'pipe'}", *run, "--stats", str(tmp_path / "s.npz")])
    # A bare model folder (config.json + scheduler_config.json) with FID on the fly.
    _tiny_diffusers(tmp_path / "bare", bare=True)
    ref = tmp_path / "ref.npz"
    FeatureStats(12).update(torch.rand(20, 12, dtype=torch.float64) * 255).save(ref)
    out = _run_json(["fid", "--model", f"diffusers:{tmp_path / 'bare'}", *run, "--ref-stats", str(ref), *standin],
                    capsys)  # fmt: skip
    assert out["num_images"] == 3 and out["fid"] > 0
    with pytest.raises(SystemExit, match=r"unet/config\.json"):
        main(["generate", "--model", f"diffusers:{tmp_path / 'nothing'}", *run])


_SCRIPT = """
import sys
import torch
from edm_samplers import _fid
from edm_samplers.cli import main

def standin(images, weights, device):
    return torch.nn.functional.adaptive_avg_pool2d(images.to(torch.float64), 2).flatten(1)

_fid._inception_features = standin
sys.exit(main(sys.argv[1:]))
"""


def test_one_and_two_processes_give_identical_statistics(tmp_path: Path) -> None:
    (tmp_path / "run.py").write_text(_SCRIPT)
    (tmp_path / "w.pth").write_bytes(b"")
    FeatureStats(12).update(torch.rand(20, 12, dtype=torch.float64) * 255).save(tmp_path / "ref.npz")
    args = ["fid", "--model", "digits", "--seeds", "0-8", "--batch", "2", "--sampler", "stochastic", "--steps", "3",
            "--opt", "s_churn=20", "--ref-stats", "ref.npz", "--inception-weights", "w.pth", "--json"]  # fmt: skip
    env_cmds = [
        [sys.executable, "run.py", *args, "--save-stats", "s1.npz"],
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "run.py", *args,
         "--save-stats", "s2.npz"],
    ]  # fmt: skip
    fids = []
    for cmd in env_cmds:
        r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        fids.append(json.loads(r.stdout)["fid"])
    s1, s2 = np.load(tmp_path / "s1.npz"), np.load(tmp_path / "s2.npz")
    np.testing.assert_array_equal(s1["mu"], s2["mu"])  # exact float64 sums: bit-identical for any rank count
    np.testing.assert_array_equal(s1["sigma"], s2["sigma"])
    assert int(s1["n"]) == int(s2["n"]) == 9 and fids[0] == fids[1]
