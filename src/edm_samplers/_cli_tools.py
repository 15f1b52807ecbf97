"""Pieces the command's subcommands share: models by name, --sampler/--opt from the registry, sampling in
rank chunks through :func:`~edm_samplers.generate`, PNG grids, progress and output. Private."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import _fid as F
from ._dist import dist_info, iter_chunks
from ._named import PROBLEMS, Problem, make_sigmas
from .solvers import generate
from .solvers.registry import REGISTRY, get, parse_knobs

__all__ = ["DIFFUSERS", "Bar", "emit", "model", "sample_chunks", "sampler_setup", "save_grid", "schedule_for"]


def save_grid(images: Tensor, path: Path, *, scale: int = 4, pad: int = 1) -> None:
    """Write ``[N, C, H, W]`` images in [-1, 1] as one PNG grid (needs pillow: the ``cli`` extra)."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("writing PNG images needs pillow: pip install 'edm-samplers[cli]'") from None
    x = F.to_uint8(images).cpu()
    n, c, h, w = x.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = torch.full((c, rows * (h + pad) + pad, cols * (w + pad) + pad), 255, dtype=torch.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w] = x[i]
    arr = grid.permute(1, 2, 0).numpy()
    img = Image.fromarray(arr[:, :, 0] if c == 1 else arr)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


DIFFUSERS = "diffusers:"


def _no_features(x: Tensor) -> Tensor:
    raise SystemExit("statistics of a diffusers model are Inception features: use edm-samplers fid --save-stats")


def device_for(name: str | None) -> torch.device:
    """--device, defaulting to this rank's CUDA device when there is one."""
    if name:
        return torch.device(name)
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def model(name: str, device: torch.device | None = None) -> tuple[Problem, bool, torch.device]:
    """(problem, is_image, device to sample on) for --model; built-in models sample on the CPU."""
    cpu = torch.device("cpu")
    if name == "digits":
        return PROBLEMS["digits-model"](), True, cpu
    if name in PROBLEMS:
        p = PROBLEMS[name]()
        return p, len(p.shape) == 3, cpu
    if name.startswith(DIFFUSERS):
        dev = device or device_for(None)
        den, shape, smin, smax = F.load_diffusers(name[len(DIFFUSERS) :], dev)

        def truth(n: int) -> Tensor:
            raise SystemExit(f"{name} has no known data distribution; compare it with edm-samplers fid")

        p = Problem(name, den, shape, truth, _no_features, sigma_min=smin, sigma_max=smax, dtype=torch.float32,
                    exact=False, description=f"diffusers checkpoint {name[len(DIFFUSERS) :]}")  # fmt: skip
        return p, True, dev
    raise SystemExit(f"--model must be one of digits, {', '.join(PROBLEMS)} or diffusers:PATH; got {name!r}")


class Bar:
    """A tqdm bar when enabled, stderr is a terminal and tqdm is installed; else silent."""

    def __init__(self, total: int, enabled: bool, desc: str) -> None:
        self.bar: Any = None
        if enabled and sys.stderr.isatty():
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, desc=desc, leave=False)

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def sampler_setup(sampler: str, opts: Sequence[str] | None) -> tuple[str, dict[str, Any]]:
    """(registry name, typed knobs) from --sampler / --opt; one-line SystemExit naming the valid ones."""
    if sampler not in REGISTRY:
        raise SystemExit(f"--sampler must be one of {', '.join(REGISTRY)}; got {sampler!r}")
    if REGISTRY[sampler].guided:  # CFG++: needs guided(net, net, w, guide_cond=...), which the CLI does not build
        raise SystemExit(f"--sampler {sampler} needs a guided denoiser (edm_samplers.guided); use it from Python")
    try:
        return sampler, parse_knobs(sampler, list(opts or []))
    except (TypeError, ValueError) as e:
        valid = ", ".join(f"{k.name}={k.type_name}" for k in get(sampler).knobs) or "none"
        raise SystemExit(f"--opt: {e} (knobs of {sampler}: {valid})") from None


def schedule_for(args: argparse.Namespace, problem: Problem) -> Tensor:
    try:
        return make_sigmas(args.schedule, args.steps, problem.sigma_min, problem.sigma_max)
    except ValueError as e:
        raise SystemExit(f"--schedule {args.schedule} --steps {args.steps}: {e}") from None


def sample_chunks(problem: Problem, device: torch.device, seeds: Sequence[int], sigmas: Tensor, chunk: int,
                  sampler: str, knobs: dict[str, Any], progress: bool = False) -> list[tuple[int, Tensor]]:  # fmt: skip
    """This rank's chunks as [(global start, samples on the CPU)], each from :func:`~edm_samplers.generate`."""
    chunks = list(iter_chunks(seeds, chunk))
    bar = Bar(len(chunks), progress, "generate")
    out = []
    for start, sd in chunks:
        x = generate(problem.denoiser, sd, problem.shape, sigmas, sampler=sampler, device=device,
                              dtype=problem.dtype, **knobs)  # fmt: skip
        out.append((start, x.cpu()))
        bar.update()
    bar.close()
    return out


def emit(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    if dist_info()[0] != 0:
        return
    print(json.dumps(payload, indent=2) if args.json else text)
