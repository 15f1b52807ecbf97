"""Question: do the library's solvers reproduce k-diffusion's implementations of the same algorithms?

k-diffusion is an optional peer (its utilities need torchvision, which does not import beside the CPU
torch used in CI), so this comparison is a script, not a test; the float64 transcription tests in
``tests/test_multistep.py`` check the same algorithms in CI. Same exact denoiser (a 4-component Gaussian
mixture), same initial noise, same schedule (``karras_sigmas(10)``), same noise draws for the SDE
samplers, float64. Prints the largest absolute difference per solver; exits 1 if any exceeds 1e-7
(k-diffusion's LMS integrates its weights with scipy.quad, rel ~1.5e-8 by default).

Run: ``python benchmarks/check_kdiffusion.py`` (needs ``pip install --no-deps k-diffusion==0.1.1.post1
torchsde torchdiffeq``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import edm_samplers as es
import solvers_accuracy as sa

TOL = 1e-7


def main() -> int:
    ks = sa.kdiffusion_sampling()
    if ks is None:
        print("k-diffusion is not importable: nothing compared")
        return 2
    g = torch.Generator().manual_seed(0)
    gm = es.evaluation.GaussianMixture(
        torch.randn(4, 5, generator=g, dtype=torch.float64),
        torch.rand(4, generator=g, dtype=torch.float64) * 0.4 + 0.1,
        torch.rand(4, generator=g, dtype=torch.float64) + 0.2,
    )
    x = torch.randn(6, 5, generator=g, dtype=torch.float64) * 80
    sig = es.karras_sigmas(10)
    draws = torch.randn(10, *x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    def noise_sampler() -> Callable[[Any, Any], torch.Tensor]:
        it = iter(draws)
        return lambda s, sn: next(it)

    cases = {  # k-diffusion runs every step at full order: order_rule="full"
        "dpmpp_2m": (es.dpmpp_2m_sample(gm, x, sig, order_rule="full"), ks.sample_dpmpp_2m(gm, x, sig, disable=True)),
        "lms:order=4": (
            es.lms_sample(gm, x, sig, order=4, order_rule="full"),
            ks.sample_lms(gm, x, sig, disable=True, order=4),
        ),
        "dpm2": (es.dpm2_sample(gm, x, sig), ks.sample_dpm_2(gm, x, sig, disable=True)),
        "euler_ancestral": (
            es.euler_ancestral_sample(gm, x, sig, eta=1.0, noise=es.PrecomputedNoise(draws)),
            ks.sample_euler_ancestral(gm, x, sig, disable=True, noise_sampler=noise_sampler()),
        ),
        "dpmpp_2m_sde": (
            es.dpmpp_2m_sde_sample(gm, x, sig, eta=1.0, order_rule="full", noise=es.PrecomputedNoise(draws)),
            ks.sample_dpmpp_2m_sde(gm, x, sig, disable=True, noise_sampler=noise_sampler()),
        ),
        "heun": (es.heun_sample(gm, x, sig), ks.sample_heun(gm, x, sig, disable=True)),
        "euler": (es.euler_sample(gm, x, sig), ks.sample_euler(gm, x, sig, disable=True)),
    }
    bad = 0
    print(f"torch {torch.__version__}; k-diffusion sampling module from {ks.__file__}")
    for name, (ours, theirs) in cases.items():
        diff = float((ours - theirs).abs().max())
        ok = diff <= TOL
        bad += not ok
        print(f"{name:<16} max |ours - k-diffusion| = {diff:.2e}  {'ok' if ok else 'MISMATCH'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
