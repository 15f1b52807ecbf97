"""The built-in model: 1x8x8 handwritten digits, shipped with the package and loaded offline.

- :func:`digits` returns an :class:`~edm_samplers.precond.EDMPrecond`-wrapped :class:`UNet` in eval
  mode, trained with :class:`~edm_samplers.training.EDMLoss` on the 1797 images of scikit-learn's
  ``load_digits`` (``examples/train_digits.py``; command, seed, time and loss in ``docs/training.md``).
  Images are ``[B, 1, 8, 8]`` in [-1, 1]: the data's 0..16 grey levels mapped by v / 8 - 1.
- :func:`digits_classifier` / :func:`digits_features`: a small CNN trained on the digit labels
  (``examples/train_digits_classifier.py``); its 64-dimensional penultimate activations are the
  feature space of the Frechet distance reported for the shipped model
  (:func:`~edm_samplers.evaluation.frechet_distance`), the digits analogue of FID's Inception features.
- :func:`load_digits_images` loads the real data (needs scikit-learn, the ``train`` extra).

Weights are stored as float16 safetensors next to this file (``digits.safetensors`` with its
configuration in ``digits.json``; ``digits_classifier.safetensors``) and read with the package's own
reader, so neither ``safetensors`` nor pickle is involved.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._safetensors import load_file
from ..precond import EDMPrecond
from .unet import UNet

__all__ = [
    "CLASSIFIER_WEIGHTS",
    "DIGITS_CONFIG",
    "DIGITS_WEIGHTS",
    "DigitsClassifier",
    "digits",
    "digits_classifier",
    "digits_features",
    "load_digits_images",
]

_HERE = Path(__file__).resolve().parent
DIGITS_WEIGHTS = _HERE / "digits.safetensors"
DIGITS_CONFIG = _HERE / "digits.json"
CLASSIFIER_WEIGHTS = _HERE / "digits_classifier.safetensors"

#: The shipped model's architecture (``digits.json`` stores the same with its training record).
DEFAULT_UNET_CONFIG: dict[str, Any] = {
    "img_channels": 1,
    "img_resolution": 8,
    "model_channels": 32,
    "channel_mult": [1, 2],
    "num_blocks": 2,
    "attn_resolutions": [4],
    "label_dim": 0,
    "augment_dim": 0,
}
DEFAULT_PRECOND_CONFIG: dict[str, Any] = {"sigma_data": 0.5, "sigma_min": 0.002, "sigma_max": 80.0}


def load_digits_images(*, return_labels: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """The 1797 real digits as float32 ``[1797, 1, 8, 8]`` in [-1, 1] (v / 8 - 1), in scikit-learn's order.

    With ``return_labels=True`` also returns the int64 class ids ``[1797]``. Needs scikit-learn
    (``pip install 'edm-samplers[train]'``); the data ships with scikit-learn, nothing is downloaded.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            "load_digits_images needs scikit-learn: pip install 'edm-samplers[train]' (or pip install scikit-learn)"
        ) from None
    data = load_digits()
    x = torch.as_tensor(data.images, dtype=torch.float32).reshape(-1, 1, 8, 8) / 8 - 1
    if return_labels:
        return x, torch.as_tensor(data.target, dtype=torch.int64)
    return x


def _read_config() -> dict[str, Any]:
    if DIGITS_CONFIG.is_file():
        cfg: dict[str, Any] = json.loads(DIGITS_CONFIG.read_text())
        return cfg
    return {"unet": DEFAULT_UNET_CONFIG, "precond": DEFAULT_PRECOND_CONFIG}


def build_digits_unet(config: dict[str, Any] | None = None) -> UNet:
    """An untrained :class:`UNet` with the shipped architecture (or ``config``'s ``unet`` entry)."""
    cfg = dict(DEFAULT_UNET_CONFIG if config is None else config)
    kw = {k: v for k, v in cfg.items() if k not in ("img_channels", "img_resolution")}
    for key in ("channel_mult", "attn_resolutions"):
        if key in kw:
            kw[key] = tuple(kw[key])
    return UNet(int(cfg.get("img_channels", 1)), int(cfg.get("img_resolution", 8)), **kw)


def _missing(path: Path, script: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"the shipped weights {path.name} are missing from {path.parent}; reinstall edm-samplers or train them "
        f"with {script}"
    )


def digits(device: torch.device | str | None = None) -> EDMPrecond:
    """The shipped digits denoiser D(x; sigma) for ``[B, 1, 8, 8]`` images in [-1, 1], frozen for inference.

    Eval mode, and no parameter requires grad: sampling builds no autograd graph through the network
    (gradients with respect to ``x`` still flow; call ``requires_grad_(True)`` to fine-tune it).

    An :class:`~edm_samplers.precond.EDMPrecond` (sigma_data = 0.5, valid range [0.002, 80]) around a
    1.03M-parameter :class:`UNet` (``digits.json`` holds its configuration) holding the EMA weights
    (stored in float16, loaded as float32).
    Unconditional: call it as ``denoiser(x, sigma)``.

    Example::

        import edm_samplers as es
        den = es.models.digits()
        imgs = es.generate(den, range(16), (1, 8, 8), es.karras_sigmas(18))  # 35 NFE of Heun
    """
    if not DIGITS_WEIGHTS.is_file():
        raise _missing(DIGITS_WEIGHTS, "examples/train_digits.py")
    cfg = _read_config()
    net = build_digits_unet(cfg.get("unet"))
    state = load_file(DIGITS_WEIGHTS)
    net.load_state_dict({k: v.to(torch.float32) for k, v in state.items()})
    pc = {**DEFAULT_PRECOND_CONFIG, **cfg.get("precond", {})}
    den = EDMPrecond(
        net, sigma_data=float(pc["sigma_data"]), sigma_min=float(pc["sigma_min"]), sigma_max=float(pc["sigma_max"])
    )
    return den.eval().requires_grad_(False).to(device if device is not None else "cpu")


class DigitsClassifier(nn.Module):
    """A small CNN for 1x8x8 digits in [-1, 1]: two 3x3 conv layers, pooling, one more conv, then
    a 64-unit hidden layer (the feature space) and 10 logits."""

    def __init__(self, feature_dim: int = 64) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv1 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv2 = nn.Conv2d(64, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 4 * 4, feature_dim)
        self.head = nn.Linear(feature_dim, 10)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations ``[B, feature_dim]`` (after ReLU)."""
        h = F.relu(self.conv0(x))
        h = F.max_pool2d(F.relu(self.conv1(h)), 2)
        h = F.relu(self.conv2(h))
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.head(self.features(x))
        return out


@functools.lru_cache(maxsize=4)
def _cached_classifier(device: str) -> DigitsClassifier:
    if not CLASSIFIER_WEIGHTS.is_file():
        raise _missing(CLASSIFIER_WEIGHTS, "examples/train_digits_classifier.py")
    net = DigitsClassifier()
    net.load_state_dict({k: v.to(torch.float32) for k, v in load_file(CLASSIFIER_WEIGHTS).items()})
    return net.eval().requires_grad_(False).to(device)


def digits_classifier(device: torch.device | str | None = None) -> DigitsClassifier:
    """The shipped digits classifier (eval mode, parameters frozen; a fresh copy each call)."""
    src = _cached_classifier("cpu")
    net = DigitsClassifier()
    net.load_state_dict(src.state_dict())
    return net.eval().requires_grad_(False).to(device if device is not None else "cpu")


def digits_features(images: Tensor, *, batch_size: int = 2048) -> Tensor:
    """Features of the shipped classifier for ``images`` ``[N, 1, 8, 8]`` in [-1, 1]: ``[N, 64]`` float64.

    This is the feature space in which the shipped model's Frechet distance is reported (see
    ``docs/training.md``); compare two sets with ``frechet_distance(digits_features(a), digits_features(b))``.
    Runs without autograd, on the images' device. Values outside [-1, 1] are clipped first, as a
    sampler's output would be when saved as an image.
    """
    if not isinstance(images, Tensor) or not images.is_floating_point() or tuple(images.shape[1:]) != (1, 8, 8):
        raise TypeError(
            f"images must be a floating tensor [N, 1, 8, 8] in [-1, 1], got {getattr(images, 'shape', images)!r}"
        )
    net = _cached_classifier(str(images.device))
    out = []
    with torch.no_grad():
        for chunk in torch.split(images, batch_size):
            out.append(net.features(chunk.to(torch.float32).clamp(-1, 1)).to(torch.float64))
    return torch.cat(out) if out else images.new_zeros((0, net.fc.out_features), dtype=torch.float64)
