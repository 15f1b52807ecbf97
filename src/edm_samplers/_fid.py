"""Inception-v3 FID plumbing behind ``edm-samplers fid`` (private; the command line is the public face).

The standard protocol (Heusel et al. 2017, as used by EDM): images as 8-bit RGB, the 2048-d pool3
features of the TensorFlow Inception-v3 (2015-12-05 graph), here torch-fidelity's bit-compatible port
``FeatureExtractorInceptionV3`` (it resizes to 299 x 299 with TF1's bilinear rule itself); mean mu and
covariance C of the features accumulated in float64 (:class:`~edm_samplers.evaluation.FeatureStats`), and
FID = ||mu_g - mu_r||^2 + tr(C_g + C_r - 2 (C_g C_r)^1/2) over 50,000 generated images.

Nothing is downloaded: the weights come from ``--inception-weights``, ``$EDM_SAMPLERS_INCEPTION`` or
torch hub's checkpoints folder, and a clear error says where to put them when they are absent.
"""

from __future__ import annotations

import functools
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _exit(msg: str) -> SystemExit:
    return SystemExit(f"edm-samplers fid: {msg}")


# ---- images --------------------------------------------------------------------------------------


def to_uint8(images: Tensor) -> Tensor:
    """``[N, C, H, W]`` in [-1, 1] -> uint8 on the same device: round((clamp(x, -1, 1) + 1) * 127.5).

    The mapping of the saved PNGs (``save_grid``), so FID of images generated on the fly equals FID of
    the same images written to disk and read back.
    """
    return ((images.detach().to(torch.float32).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def to_rgb(images_uint8: Tensor) -> Tensor:
    """uint8 ``[N, 1 or 3, H, W]`` -> ``[N, 3, H, W]`` (grayscale repeated, as PIL's ``convert("RGB")``)."""
    if images_uint8.ndim != 4 or images_uint8.shape[1] not in (1, 3):
        raise _exit(f"FID needs images [N, 1 or 3, H, W], got shape {tuple(images_uint8.shape)}")
    return images_uint8.expand(-1, 3, -1, -1) if images_uint8.shape[1] == 1 else images_uint8


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursively, e.g. EDM's 000000/000123.png layout), sorted by path."""
    root = Path(folder)
    if not root.is_dir():
        raise _exit(f"{folder} is not a folder of images")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if len(files) < 2:
        raise _exit(f"{folder} holds {len(files)} image(s) ({'/'.join(IMAGE_SUFFIXES)}); FID needs at least 2")
    return files


def read_images(paths: list[Path]) -> Tensor:
    """The images at ``paths`` as uint8 ``[N, 3, H, W]`` (RGB; grayscale repeated, alpha dropped)."""
    try:
        import numpy as np
        from PIL import Image
    except ImportError:
        raise _exit("reading images needs pillow: pip install 'edm-samplers[fid]'") from None
    arrs = []
    for p in paths:
        with Image.open(p) as im:
            arrs.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
    shapes = {a.shape for a in arrs}
    if len(shapes) > 1:
        raise _exit(f"images must all have one size; {paths[0].parent} mixes {sorted(shapes)}")
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()


# ---- the feature extractor -----------------------------------------------------------------------


def find_inception_weights(path: str | None) -> str:
    """The local Inception-v3 weights: ``path``, else ``$EDM_SAMPLERS_INCEPTION``, else torch hub's checkpoints.

    Raises:
        SystemExit: naming where to put the file when none is found (nothing is downloaded).
    """
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    where = (
        f"Put torch-fidelity's {INCEPTION_FILE} (converted from TensorFlow's 2015-12-05 Inception-v3) at "
        f"{hub / INCEPTION_FILE}, or pass --inception-weights FILE, or set EDM_SAMPLERS_INCEPTION=FILE. "
        "Nothing is downloaded at run time; fetch it on a machine with internet from torch-fidelity's "
        "releases (github.com/toshas/torch-fidelity/releases, v0.2.0) and copy it over."
    )
    given = path or os.environ.get("EDM_SAMPLERS_INCEPTION")
    if given:
        if not Path(given).is_file():
            src = "--inception-weights" if path else "EDM_SAMPLERS_INCEPTION"
            raise _exit(f"{src}: Inception-v3 weights {given} not found. {where}")
        return str(given)
    found = sorted(hub.glob("weights-inception-2015-12-05-*.pth")) if hub.is_dir() else []
    if not found:
        raise _exit(f"Inception-v3 weights not found. {where}")
    return str(found[0])


@functools.lru_cache(maxsize=2)
def _load_inception(weights: str, device: str) -> Any:
    """torch-fidelity's Inception-v3 (pool3 '2048' features) with local ``weights``, in eval mode on ``device``.

    The file is read exactly once, by ``torch.load(..., weights_only=True)`` (plain tensors only: a pickle
    that would run code is refused), and the network receives that checked state dict.
    """
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError as e:
        raise _exit(f"FID needs torch-fidelity: pip install 'edm-samplers[fid]' ({e})") from None
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:
        raise _exit(f"{weights} is not a tensor state dict of Inception-v3 weights: {str(e)[:300]}") from None
    if not isinstance(state, dict) or "Mixed_7c.branch_pool.conv.weight" not in state:
        raise _exit(f"{weights} does not hold torch-fidelity's Inception-v3 weights (no Mixed_7c layers)")
    net = _with_state(FeatureExtractorInceptionV3, state)
    return net.eval().requires_grad_(False).to(device)


def _with_state(cls: Any, state: dict[str, Tensor]) -> Any:
    """``cls("inception-v3-compat", ["2048"])`` holding ``state``, without letting it open any file.

    torch-fidelity's constructor (0.3, 0.4) reads its weights itself, ``torch.load(path, weights_only=False)``
    then ``self.load_state_dict(...)``, and with no path it downloads them. Here it unpickles only an empty
    dict serialised in memory here, and a one-shot subclass loads the checked ``state`` (strictly)
    in its place; the object is then turned back into a plain ``cls``.
    """

    class _Checked(cls):  # type: ignore[misc]
        def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
            del state_dict, strict  # the constructor's in-memory placeholder
            return super().load_state_dict(state, strict=True, assign=assign)

    placeholder = io.BytesIO()
    torch.save({}, placeholder)
    placeholder.seek(0)
    net = _Checked("inception-v3-compat", ["2048"], feature_extractor_weights_path=placeholder)
    net.__class__ = cls
    return net


def _inception_features(images_uint8: Tensor, weights: str, device: torch.device) -> Tensor:
    """uint8 RGB images ``[N, 3, H, W]`` (any size) -> pool3 features ``[N, 2048]`` float64 on the CPU.

    The one place the network is called; tests substitute a cheap stand-in with the same signature.
    """
    net = _load_inception(weights, str(device))
    with torch.no_grad():
        (f,) = net(images_uint8.to(device))
    out: Tensor = f.to(device="cpu", dtype=torch.float64)
    return out


FeatureFn = Callable[[Tensor], Tensor]


def inception(weights: str, device: torch.device) -> FeatureFn:
    """uint8 images -> features, calling :func:`_inception_features` through the module (so it can be patched)."""

    def feats(images_uint8: Tensor) -> Tensor:
        return _inception_features(to_rgb(images_uint8), weights, device)  # a global look-up at call time

    return feats


# ---- distributed ---------------------------------------------------------------------------------


# ---- diffusers checkpoints -----------------------------------------------------------------------


def load_diffusers(path: str, device: torch.device) -> tuple[Callable[..., Tensor], tuple[int, int, int], float, float]:
    """A LOCAL diffusers checkpoint as ``(denoiser, (C, H, W), sigma_min, sigma_max)``; nothing is downloaded.

    ``path`` is a pipeline folder (``unet/`` and ``scheduler/`` subfolders, as ``DDPMPipeline.save_pretrained``
    writes) or a bare ``UNet2DModel`` folder holding ``scheduler_config.json`` beside ``config.json``. The
    model is wrapped by :func:`edm_samplers.from_diffusers` (alphas_cumprod and prediction type from the
    scheduler config); the sigma range is the scheduler's trained range.
    """
    try:
        from diffusers import UNet2DModel
    except ImportError:
        raise SystemExit("--model diffusers:PATH needs diffusers: pip install 'edm-samplers[diffusers]'") from None
    from .diffusers_adapter import from_diffusers

    root = Path(path)
    if (root / "unet" / "config.json").is_file() and (root / "scheduler" / "scheduler_config.json").is_file():
        model_dir, sched_file = root / "unet", root / "scheduler" / "scheduler_config.json"
    elif (root / "config.json").is_file() and (root / "scheduler_config.json").is_file():
        model_dir, sched_file = root, root / "scheduler_config.json"
    else:
        raise SystemExit(
            f"--model diffusers:{path}: expected a local folder with unet/config.json and "
            "scheduler/scheduler_config.json (a saved pipeline), or config.json + scheduler_config.json"
        )
    cls = json.loads((model_dir / "config.json").read_text()).get("_class_name", "UNet2DModel")
    if cls != "UNet2DModel":
        raise SystemExit(
            f"--model diffusers:{path}: only unconditional UNet2DModel checkpoints are supported, got {cls}"
        )
    unet = UNet2DModel.from_pretrained(str(model_dir), local_files_only=True)  # type: ignore[no-untyped-call]
    unet = unet.eval().requires_grad_(False).to(device)
    den = from_diffusers(unet, json.loads(sched_file.read_text()))
    cfg = unet.config
    hw = (cfg.sample_size, cfg.sample_size) if isinstance(cfg.sample_size, int) else tuple(cfg.sample_size)
    shape = (int(cfg.in_channels), int(hw[0]), int(hw[1]))

    def denoiser(x: Tensor, sigma: Tensor, /, **cond: Any) -> Tensor:
        with torch.no_grad():
            out: Tensor = den(x, sigma, **cond)
        return out.to(x.dtype)

    return denoiser, shape, float(den.sigma_min), float(den.sigma_max)
