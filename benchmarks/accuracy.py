"""Exact-denoiser accuracy suite: which sampler reaches a given error with the fewest NFE?

Thin wrapper over ``benchmarks/bench.py`` (see ``benchmarks/README.md``). Problems with a known data
distribution: ``ring2d``, ``mixture64d`` (closed-form Gaussian-mixture denoisers) and
``digits-empirical`` (the ideal denoiser of the 1797 real digits; needs scikit-learn). For every sampler
and schedule of the library and the installed peers (k-diffusion, diffusers): global RMS error against a
Dormand-Prince reference (cached under ``--out``/cache), Frechet distance and sliced W2 against the true
distribution, NFE 3..100. Writes results.json and log-log plots; prints the tables.

    python benchmarks/accuracy.py --out bench_out/accuracy --verbose
    torchrun --nproc_per_node=2 benchmarks/accuracy.py --out bench_out/accuracy   # seeds sharded
"""

from __future__ import annotations

import sys

from bench import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--problems" not in args:
        args = ["--problems", "ring2d", "mixture64d", "digits-empirical", *args]
    sys.exit(main(args))
