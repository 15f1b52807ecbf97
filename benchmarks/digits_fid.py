"""NFE vs Frechet distance on the shipped digits model (features of the shipped classifier).

Thin wrapper over ``benchmarks/bench.py --problems digits-model``: every sampler/schedule of the library
and the installed peers, same seeds, same NFE; Frechet distance and sliced W2 in the 64-D classifier
feature space against the 1797 real digits (needs scikit-learn), plus the global error against the
reference ODE solution of the network itself.

    python benchmarks/digits_fid.py --samples 2000 --out bench_out/digits --verbose
"""

from __future__ import annotations

import sys

from bench import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--problems" not in args:
        args = ["--problems", "digits-model", *args]
    sys.exit(main(args))
