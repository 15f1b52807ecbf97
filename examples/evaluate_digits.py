"""Evaluate the shipped digits model: Frechet distances against real digits, and an image grid.

    python examples/evaluate_digits.py --png docs/digits.png

Protocol (recorded in docs/training.md): the 1797 real digits are split by a fixed permutation
(``torch.randperm`` with seed 0) into half A (899 images) and half B (898). ``n = 898`` digits are
generated with Heun at 35 NFE (``karras_sigmas(18)``, sigma in [0.002, 80], rho = 7), one seed per
image (seeds 0..897, :func:`edm_samplers.generate`), and clipped to [-1, 1]. Frechet distances are
computed in two feature spaces: the shipped classifier's 64-d features
(:func:`edm_samplers.models.digits_features`) and raw pixels (64-d). The reference is real-vs-real:
FD(B, A); the model's number is FD(generated, A), from sets of the same sizes, so the finite-sample
bias matches. Also reports nearest-neighbour pixel distances to half A (a memorisation check) and
the classifier's class counts of the samples. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import cast

import torch

import edm_samplers as es
from edm_samplers.models.digits import digits_features, load_digits_images


def image_grid(images: torch.Tensor, path: Path, *, cols: int = 16, scale: int = 4) -> None:
    """Write ``images`` [N, 1, 8, 8] in [-1, 1] as a grey PNG grid (needs pillow)."""
    from PIL import Image

    n = images.shape[0]
    rows = (n + cols - 1) // cols
    pad = 1
    h = w = 8 * scale
    canvas = torch.ones(rows * (h + pad) + pad, cols * (w + pad) + pad)
    x = ((images.clamp(-1, 1) + 1) / 2).squeeze(1)  # [N, 8, 8] in [0, 1]
    x = x.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    for i in range(n):
        r, c = divmod(i, cols)
        canvas[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = 1 - x[i]
    arr = (canvas * 255).round().to(torch.uint8).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode="L").save(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--png", type=Path, default=None, help="write a grid of the first --grid samples here")
    p.add_argument("--grid", type=int, default=128)
    p.add_argument("--steps", type=int, default=18, help="Heun steps (NFE = 2 steps - 1)")
    args = p.parse_args(argv)

    real = cast(torch.Tensor, load_digits_images())
    perm = torch.randperm(real.shape[0], generator=torch.Generator().manual_seed(0))
    half_a, half_b = real[perm[:899]], real[perm[899:]]
    den = es.models.digits()
    sigmas = es.karras_sigmas(args.steps, sigma_min=0.002, sigma_max=80.0)
    t0 = time.time()
    with torch.no_grad():
        gen = es.generate(den, range(half_b.shape[0]), (1, 8, 8), sigmas, sampler="heun").clamp(-1, 1)
    t_sample = time.time() - t0

    fa, fb, fg = digits_features(half_a), digits_features(half_b), digits_features(gen)
    pix = {"a": half_a.flatten(1).double(), "b": half_b.flatten(1).double(), "g": gen.flatten(1).double()}
    res = {
        "n_generated": gen.shape[0],
        "nfe": es.count_nfe(sigmas, "heun"),
        "sampling_time_s": round(t_sample, 1),
        "classifier_fd_real_vs_real": es.evaluation.frechet_distance(fb, fa),
        "classifier_fd_generated_vs_real": es.evaluation.frechet_distance(fg, fa),
        "classifier_fd_generated_vs_real_b": es.evaluation.frechet_distance(fg, fb),
        "pixel_fd_real_vs_real": es.evaluation.frechet_distance(pix["b"], pix["a"]),
        "pixel_fd_generated_vs_real": es.evaluation.frechet_distance(pix["g"], pix["a"]),
    }
    res["classifier_ratio"] = res["classifier_fd_generated_vs_real"] / res["classifier_fd_real_vs_real"]
    res["pixel_ratio"] = res["pixel_fd_generated_vs_real"] / res["pixel_fd_real_vs_real"]
    # class balance of the samples according to the classifier (a mode-collapse check)
    clf = es.models.digits_classifier()
    with torch.no_grad():
        counts = torch.bincount(clf(gen).argmax(1), minlength=10)
    res["predicted_class_counts"] = counts.tolist()
    # memorisation check: pixel L2 distance from each image to its nearest neighbour in half A, for the
    # generated set and for real half B (the model saw both halves in training; a model that copies
    # training images would have much smaller distances than real B does)
    for name, q in (("generated", pix["g"]), ("real_b", pix["b"])):
        nn_d = torch.cdist(q, pix["a"]).min(1).values
        res[f"nn_l2_{name}_to_a_p10_median"] = [
            round(float(v), 3) for v in nn_d.quantile(torch.tensor([0.1, 0.5]).double())
        ]
    print(json.dumps(res, indent=2))
    if args.png is not None:
        image_grid(gen[: args.grid], args.png)
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
