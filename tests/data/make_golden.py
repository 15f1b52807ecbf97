"""Write tests/data/golden.safetensors: fixed inputs and float64 outputs of every sampler of the library.

Recorded before the solver-registry refactor (issue 12) so that the refactored library can be checked to
reproduce the old numbers bit for bit (tests/test_golden.py). Every case stores the exact knobs it was run
with, defaults included: where a default changes later on purpose, the test still passes the old value
explicitly. Two denoisers: a small closed-form Gaussian mixture (float64 all through) and the shipped
digits model (its float32 network inside a float64 sampling state).

Run from the repository root (one thread: the digits network's CPU kernels are then deterministic):

    OMP_NUM_THREADS=1 PYTHONPATH=src python tests/data/make_golden.py

A rerun keeps the stored inputs (``--fresh-inputs`` rebuilds them). It was rerun twice against main's
unrefactored code (``PYTHONPATH`` pointing at an export of main's ``src/``) when issue 11's deliberate
numerical fixes landed there (Euler ancestral's sigma_down; EDM coefficients through hypot, vp_sigma without
overflow): the golden outputs are always those of the pre-refactor code paths, on fixed inputs.

When ``lower_order_final`` became ``order_rule`` (issue 12 item 7) the stored cases' knobs were renamed in
place (False -> "full", True -> "final": the same plans) and their outputs kept bit for bit; the
``AUTO_CASES`` were appended, recorded by that version of the library (``--append-only`` adds cases missing
from the file without recomputing the stored ones).

When the noise of ``generate()``'s stochastic samplers became counter-based (issue 15) the four ``generate``
cases of stochastic samplers were recomputed with ``--recompute out/037,out/038,out/083,out/084`` (every other
stored output kept bit for bit: the deterministic ones, and the sampler cases, which pass PerSampleNoise).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from edm_samplers._safetensors import load_file, save_file  # noqa: E402
from test_golden import GOLDEN, build_inputs, run_case  # noqa: E402

CHURN = {"s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.003}
LOF = {"order_rule": "full"}  # recorded as lower_order_final=False; "full" is the same plan

# (sampler, knobs) per kind; every knob written out, defaults included.
SAMPLE_CASES: list[tuple[str, dict[str, Any]]] = [
    ("euler", {}),
    ("heun", {}),
    ("stochastic", {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": float("inf"), "s_noise": 1.0, "solver": "heun"}),
    ("stochastic", {**CHURN, "solver": "heun"}),
    ("stochastic", {**CHURN, "solver": "euler"}),
    ("dpmpp_2m", {**LOF}),
    ("dpmpp_2m", {"order_rule": "final"}),
    ("dpmpp_3m", {"order": 3, **LOF}),
    ("dpmpp_3m", {"order": 2, "order_rule": "final"}),
    ("dpmpp_2m_sde", {"eta": 1.0, "s_noise": 1.0, **LOF}),
    ("dpmpp_2m_sde", {"eta": 0.5, "s_noise": 1.003, "order_rule": "final"}),
    ("dpmpp_3m_sde", {"eta": 1.0, "s_noise": 1.0, **LOF}),
    ("dpmpp_3m_sde", {"eta": 0.5, "s_noise": 1.0, "order_rule": "final"}),
    ("deis", {"order": 3, **LOF}),
    ("deis", {"order": 2, "order_rule": "final"}),
    ("lms", {"order": 4, **LOF}),
    ("lms", {"order": 2, "order_rule": "final"}),
    ("ipndm", {"order": 4, **LOF}),
    ("ipndm", {"order": 3, "order_rule": "final"}),
    ("unipc", {"order": 3, **LOF}),
    ("unipc", {"order": 2, "order_rule": "final"}),
    ("euler_ancestral", {"eta": 1.0, "s_noise": 1.0}),
    ("euler_ancestral", {"eta": 0.5, "s_noise": 1.003}),
    ("dpm2", {"form": "noise"}),
    ("dpm2", {"form": "data"}),
]
_GEN_DEFAULTS = {"schedule": "edm", "scaling": "none", "solver": "heun", "alpha": 1.0, "s_churn": 0.0,
                 "s_tmin": 0.0, "s_tmax": float("inf"), "s_noise": 1.0, "beta_d": 19.9, "beta_min": 0.1}  # fmt: skip
GENERALIZED_CASES: list[dict[str, Any]] = [
    dict(_GEN_DEFAULTS),
    {**_GEN_DEFAULTS, "schedule": "vp", "scaling": "vp"},
    {**_GEN_DEFAULTS, "schedule": "ve"},
    {**_GEN_DEFAULTS, "alpha": 0.5},
    {**_GEN_DEFAULTS, **CHURN},
    {**_GEN_DEFAULTS, "schedule": "vp", "scaling": "vp", "solver": "euler", **CHURN},
    {**_GEN_DEFAULTS, "schedule": "vp", "scaling": "vp", "beta_d": 10.0, "beta_min": 0.2, "alpha": 0.75},
]
GENERATE_CASES: list[tuple[str, dict[str, Any]]] = [
    ("heun", {}),
    ("stochastic", {**CHURN, "solver": "heun"}),
    ("dpmpp_2m_sde", {"eta": 1.0, "s_noise": 1.0, **LOF}),
    ("unipc", {"order": 3, **LOF}),
]
GRAPHED_CASES: list[tuple[str, dict[str, Any]]] = [
    ("heun", {}),
    ("euler", {}),
    ("stochastic", {**CHURN, "solver": "heun"}),
    ("dpmpp_2m_sde", {"eta": 1.0, "s_noise": 1.003, **LOF}),
    ("unipc", {"order": 2, "order_rule": "final"}),
    ("dpm2", {"form": "noise"}),
]


# order_rule="auto" (the default since issue 12 item 7), appended after the pre-refactor cases: recorded by the
# library that introduced it, on the same inputs (rule changes after that must be deliberate).
AUTO_CASES: list[tuple[str, dict[str, Any]]] = [
    ("dpmpp_2m", {"order_rule": "auto"}),
    ("dpmpp_3m", {"order": 3, "order_rule": "auto"}),
    ("dpmpp_2m_sde", {"eta": 1.0, "s_noise": 1.0, "order_rule": "auto"}),
    ("dpmpp_3m_sde", {"eta": 1.0, "s_noise": 1.0, "order_rule": "auto"}),
    ("deis", {"order": 3, "order_rule": "auto"}),
    ("lms", {"order": 4, "order_rule": "auto"}),
    ("ipndm", {"order": 4, "order_rule": "auto"}),
    ("unipc", {"order": 3, "order_rule": "auto"}),
]


def cases() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for den in ("gm", "digits"):
        for name, knobs in SAMPLE_CASES:
            out.append({"kind": "sample", "denoiser": den, "sampler": name, "knobs": knobs, "schedule": "full"})
        for name in ("euler", "heun", "lms", "ipndm"):  # schedules that stop above 0
            knobs = {"order": 2, **LOF} if name in ("lms", "ipndm") else {}
            out.append({"kind": "sample", "denoiser": den, "sampler": name, "knobs": knobs, "schedule": "trunc"})
        for knobs in GENERALIZED_CASES:
            out.append({"kind": "generalized", "denoiser": den, "sampler": "generalized", "knobs": knobs,
                        "schedule": "full"})  # fmt: skip
        for name, knobs in GENERATE_CASES:
            out.append({"kind": "generate", "denoiser": den, "sampler": name, "knobs": knobs, "schedule": "full"})
        for name, knobs in GRAPHED_CASES:
            out.append({"kind": "graphed", "denoiser": den, "sampler": name, "knobs": knobs, "schedule": "full"})
    for den in ("gm", "digits"):
        for name, knobs in AUTO_CASES:
            out.append({"kind": "sample", "denoiser": den, "sampler": name, "knobs": knobs, "schedule": "full"})
    for i, c in enumerate(out):
        c["key"] = f"out/{i:03d}"
    return out


def main() -> None:
    torch.set_num_threads(1)
    # The inputs are fixed once: a rerun (after a deliberate numerical change upstream of the refactor) keeps
    # the stored ones, so a change of, say, karras_sigmas cannot move them. --fresh-inputs rebuilds them.
    if GOLDEN.is_file() and "--fresh-inputs" not in sys.argv:
        inputs = {k[3:]: v for k, v in load_file(GOLDEN).items() if k.startswith("in/")}
    else:
        inputs = build_inputs()
    tensors = {f"in/{k}": v for k, v in inputs.items()}
    all_cases = cases()
    redo = set(sys.argv[sys.argv.index("--recompute") + 1].split(",")) if "--recompute" in sys.argv else set()
    if "--append-only" in sys.argv or redo:  # keep the stored outputs except those named; compute the others
        tensors.update({k: v for k, v in load_file(GOLDEN).items() if k.startswith("out/") and k not in redo})
    for c in all_cases:
        if c["key"] in tensors:
            continue
        out = run_case(c, inputs)
        assert out.dtype == torch.float64, (c, out.dtype)
        tensors[c["key"]] = out.detach().contiguous()
    # json.dumps writes inf as Infinity; json.loads reads it back.
    meta = {"cases": json.dumps(all_cases, separators=(",", ":")), "torch": torch.__version__}
    save_file(tensors, GOLDEN, metadata=meta)
    print(f"wrote {len(all_cases)} cases to {GOLDEN} ({GOLDEN.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
