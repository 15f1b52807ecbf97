"""Random bad input to every sampler entry point never gives a silent wrong answer (issue 11).

Each call starts from a valid one and replaces some of its arguments by values from a catalogue: every entry
alone (a sweep, so that no bad value is masked by another that raises first), then one to three at a time,
drawn by Hypothesis. Every replacement is tagged:

- ``RAISE``: the input is wrong; the call must raise ``ValueError`` or ``TypeError`` from the library's own
  checks (the innermost frame of the traceback lies in edm_samplers, not in torch or numpy);
- ``NONFINITE``: the input holds NaN or inf; the result's finite check (``FloatingPointError``) is then a
  clear answer too;
- ``OK``: unusual but legitimate; the call may still refuse it with a named error, or must return a finite
  tensor of the right shape and dtype.

Entry points: every ``*_sample`` function the package exports (found by name, so a new sampler is covered
without editing this file), ``generate``, ``GraphedSampler`` (eager on the CPU) and ``from_diffusers``.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

import edm_samplers as es
from edm_samplers import GraphedSampler, PerSampleNoise, generate

PKG = Path(es.__file__).resolve().parent
SAMPLE_FNS = [getattr(es, n) for n in sorted(es.__all__) if n.endswith("_sample")]
B = 2  # batch
SIG = (8.0, 2.0, 0.5, 0.0)

RAISE, NONFINITE, OK = "raise", "nonfinite", "ok"
# Combinations: every entry is also tried alone (the sweeps), so fewer examples suffice here (~0.2 s a test).
COMBOS = settings(max_examples=15, deadline=None)


class Bad(NamedTuple):
    """One replacement: ``apply(args)`` edits the call's arguments; ``keys`` are the arguments it touches."""

    label: str
    kind: str
    keys: frozenset[str]
    apply: Callable[[dict[str, Any]], None]


def put(key: str, label: str, kind: str, make: Callable[[], Any], **also: Callable[[], Any]) -> Bad:
    """A replacement of ``key`` by ``make()`` (a factory: every example gets fresh tensors), plus ``also``."""

    def apply(args: dict[str, Any]) -> None:
        args[key] = make()
        for k, m in also.items():
            args[k] = m()

    return Bad(label, kind, frozenset({key, *also}), apply)


def gauss(x: Tensor, sigma: Tensor, **cond: Any) -> Tensor:
    """D(x; sigma) of N(0, I) data: x / (1 + sigma^2). Finite wherever sigma^2 is."""
    del cond
    return x / (1 + sigma.reshape(-1, *[1] * (x.ndim - 1)).to(x.dtype) ** 2)


def x0(dtype: torch.dtype = torch.float32, scale: float = 8.0, shape: tuple[int, ...] = (B, 3)) -> Tensor:
    return (torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * scale).to(dtype)


def F64() -> torch.dtype:
    return torch.float64


def meta(*shape: int) -> Tensor:
    return torch.empty(shape, device="meta")


def with_nan(t: Tensor) -> Tensor:
    t = t.clone()
    t.view(-1)[0] = float("nan")
    return t


# ---- catalogues ----------------------------------------------------------------------------------

SIGMAS = [
    put("sigmas", "nan", RAISE, lambda: [8.0, float("nan"), 0.0]),
    put("sigmas", "inf inside", RAISE, lambda: [8.0, float("inf"), 0.0]),
    put("sigmas", "inf last", RAISE, lambda: [float("inf"), float("inf")]),
    put("sigmas", "-inf first", RAISE, lambda: [-float("inf"), 1.0, 0.0]),
    put("sigmas", "inf first", OK, lambda: [float("inf"), 1.0, 0.0]),  # a start from pure noise (x = unit noise)
    put("sigmas", "increasing", RAISE, lambda: [2.0, 8.0, 0.0]),
    put("sigmas", "zero inside", RAISE, lambda: [8.0, 0.0, 0.0]),
    put("sigmas", "negative", RAISE, lambda: [8.0, -1.0]),
    put("sigmas", "2-D", RAISE, lambda: torch.tensor([SIG])),
    put("sigmas", "one level", RAISE, lambda: [8.0]),
    put("sigmas", "empty", RAISE, lambda: []),
    put("sigmas", "str", RAISE, lambda: "8,2,0"),
    put("sigmas", "None", RAISE, lambda: None),
    put("sigmas", "int tensor", RAISE, lambda: torch.tensor([8, 2, 0])),
    put("sigmas", "meta", RAISE, lambda: torch.tensor(SIG).to("meta")),
    # Squares overflow / underflow the float32 state (x float32, no dtype override).
    put("sigmas", "1e20 in float32", RAISE, lambda: [1e20, 1.0, 0.0], x=lambda: x0(scale=1e20), dtype=lambda: None),
    put("sigmas", "1e-20 in float32", RAISE, lambda: [1.0, 1e-20, 0.0], x=lambda: x0(scale=1.0), dtype=lambda: None),
    put("sigmas", "1e200 in float64", RAISE, lambda: [1e200, 1.0, 0.0], dtype=F64),
    put("sigmas", "1e-200 in float64", RAISE, lambda: [1.0, 1e-200, 0.0], dtype=F64),
    put("sigmas", "python list", OK, lambda: list(SIG)),
    put("sigmas", "repeated level", OK, lambda: [8.0, 2.0, 2.0, 0.0]),  # multistep solvers refuse it
    put("sigmas", "no final zero", OK, lambda: [8.0, 2.0, 0.5]),
    put("sigmas", "float32 tensor", OK, lambda: torch.tensor(SIG, dtype=torch.float32)),
    put(
        "sigmas",
        "1e150 in float64",
        OK,
        lambda: [1e150, 5e149, 1e149, 0.0],
        x=lambda: x0(torch.float64, 1e150),
        dtype=F64,
    ),
    put(
        "sigmas", "1e-150 in float64", OK, lambda: [1e-150, 5e-151, 0.0], x=lambda: x0(torch.float64, 1e-150), dtype=F64
    ),
    put("sigmas", "1e18 in float32", OK, lambda: [1e18, 1e17, 0.0], x=lambda: x0(scale=1e18), dtype=lambda: None),
]

DENOISERS = [
    put("denoiser", "not callable", RAISE, lambda: 42),
    put("denoiser", "wrong shape", RAISE, lambda: lambda x, s, **c: x[:1]),
    put("denoiser", "flattened", RAISE, lambda: lambda x, s, **c: x.reshape(-1)),
    put("denoiser", "int output", RAISE, lambda: lambda x, s, **c: x.long()),
    put("denoiser", "list output", RAISE, lambda: lambda x, s, **c: [x]),
    put("denoiser", "None output", RAISE, lambda: lambda x, s, **c: None),
    put("denoiser", "meta output", RAISE, lambda: lambda x, s, **c: torch.empty(x.shape, device="meta")),
    put("denoiser", "nan output", NONFINITE, lambda: lambda x, s, **c: x * float("nan")),
    put("denoiser", "inf output", NONFINITE, lambda: lambda x, s, **c: x + float("inf")),
    put("denoiser", "float16 output", OK, lambda: lambda x, s, **c: gauss(x, s).half()),
    put("denoiser", "float64 output", OK, lambda: lambda x, s, **c: gauss(x, s).double()),
]

CONDS = [
    put("cond", "list", RAISE, lambda: [1]),
    put("cond", "str", RAISE, lambda: "cond"),
    put("cond", "int key", RAISE, lambda: {1: 2}),
    put("cond", "batch + 1", RAISE, lambda: {"y": torch.ones(B + 1)}),
    put("cond", "batch + 1, 2-D", RAISE, lambda: {"y": torch.ones(B + 1, 4)}),
    put("cond", "meta tensor", RAISE, lambda: {"y": meta(B)}),
    put("cond", "shared row", OK, lambda: {"y": torch.ones(1, 4)}),
    put("cond", "0-d", OK, lambda: {"y": torch.tensor(1.0)}),
    put("cond", "per sample", OK, lambda: {"y": torch.ones(B)}),
    put("cond", "non-tensor", OK, lambda: {"y": "a prompt", "w": 3}),
    put("cond", "None", OK, lambda: None),
]

DTYPES = [
    put("dtype", "int64", RAISE, lambda: torch.int64),
    put("dtype", "bool", RAISE, lambda: torch.bool),
    put("dtype", "complex", RAISE, lambda: torch.complex64),
    put("dtype", "str", RAISE, lambda: "float32"),
    put("dtype", "int", RAISE, lambda: 32),
    put("dtype", "float16", OK, lambda: torch.float16),
    put("dtype", "bfloat16", OK, lambda: torch.bfloat16),
    put("dtype", "float64", OK, lambda: torch.float64),
]

XS = [
    put("x", "list", RAISE, lambda: [[1.0, 2.0, 3.0]] * B),
    put("x", "None", RAISE, lambda: None),
    put("x", "int64", RAISE, lambda: torch.ones(B, 3, dtype=torch.int64)),
    put("x", "bool", RAISE, lambda: torch.ones(B, 3, dtype=torch.bool)),
    put("x", "complex", RAISE, lambda: torch.ones(B, 3, dtype=torch.complex64)),
    put("x", "0-d", RAISE, lambda: torch.tensor(1.0)),
    put("x", "empty batch", RAISE, lambda: torch.ones(0, 3)),
    put("x", "meta", RAISE, lambda: meta(B, 3)),
    put("x", "nan", NONFINITE, lambda: with_nan(x0())),
    put("x", "inf", NONFINITE, lambda: x0() + float("inf")),
    put("x", "float16", OK, lambda: x0(torch.float16)),
    put("x", "float64", OK, lambda: x0(torch.float64)),
    put("x", "rank 4", OK, lambda: x0(shape=(B, 1, 2, 2))),
]

NOISES = [
    put("noise", "str", RAISE, lambda: "seed"),
    put("noise", "int", RAISE, lambda: 42),
    put("noise", "list", RAISE, lambda: [1, 2]),
    put("noise", "generator", OK, lambda: torch.Generator().manual_seed(3)),
    put("noise", "per-sample", OK, lambda: PerSampleNoise(range(B))),
    put("noise", "seed count != batch", OK, lambda: PerSampleNoise(range(B + 1))),  # only stochastic ones draw
    put("noise", "None", OK, lambda: None),
]

CALLBACKS = [
    put("callback", "int", RAISE, lambda: 42),
    put("callback", "str", RAISE, lambda: "print"),
    put("callback", "list.append", OK, lambda: [].append),
]


def knob_catalogue(fn: Callable[..., Any], skip: frozenset[str] = frozenset()) -> dict[str, list[Bad]]:
    """Bad values for each method knob of ``fn``, chosen from the type of its default."""
    run_options = {"cond", "noise", "callback", "dtype", "progress", "check_finite"}
    common = run_options | {"afs", "direction_scale", "sigma_scale"} | skip  # the last three: tests/test_afs.py
    out: dict[str, list[Bad]] = {}
    for p in inspect_kwonly(fn):
        if p.name in common:
            continue
        d = p.default
        k = p.name
        if isinstance(d, bool):
            cat = [put(k, f"{k}=1", RAISE, lambda: 1), put(k, f"{k}='yes'", RAISE, lambda: "yes")]
            cat += [put(k, f"{k}=None", RAISE, lambda: None), put(k, f"{k}=True", OK, lambda: True)]
        elif isinstance(d, int):
            cat = [put(k, f"{k}={v!r}", RAISE, lambda v=v: v) for v in (-1, 0, 99, 2.0, "2", None, True)]
            cat += [put(k, f"{k}=1", OK, lambda: 1), put(k, f"{k}=2", OK, lambda: 2)]
        elif isinstance(d, float):
            vals: list[Any] = [-1.0, float("nan"), "1", None, True, [1.0], torch.ones(2)]
            if not math.isinf(d):
                vals.append(float("inf"))
            cat = [put(k, f"{k}={v!r}", RAISE, lambda v=v: v) for v in vals]
            cat += [put(k, f"{k}=0.5", OK, lambda: 0.5), put(k, f"{k}=40", OK, lambda: 40.0)]
        elif isinstance(d, str):
            cat = [put(k, f"{k}={v!r}", RAISE, lambda v=v: v) for v in ("bogus", "", 1, None)]
        elif d is None:  # round_sigma
            cat = [
                put(k, f"{k}=42", RAISE, lambda: 42),
                put(k, f"{k}: s * 0", RAISE, lambda: lambda s: s * 0),
                put(k, f"{k}: -s", RAISE, lambda: lambda s: -s),
                put(k, f"{k}: nan", RAISE, lambda: lambda s: s * float("nan")),
                put(k, f"{k}: list", RAISE, lambda: lambda s: s.tolist()),
                put(k, f"{k}: wrong length", RAISE, lambda: lambda s: s[:-1]),
                put(k, f"{k}: complex", RAISE, lambda: lambda s: s.to(torch.complex128)),
                put(k, f"{k}: identity", OK, lambda: lambda s: s),
            ]
        else:
            raise AssertionError(f"no bad values for {fn.__name__}({k}={d!r}); extend knob_catalogue")
        out[k] = cat
    return out


def inspect_kwonly(fn: Callable[..., Any]) -> list[Any]:
    import inspect

    return [p for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY]


def draw_bad(data: st.DataObject, catalogue: dict[str, list[Bad]]) -> list[Bad]:
    """One to three replacements on distinct arguments."""
    keys = data.draw(st.lists(st.sampled_from(sorted(catalogue)), min_size=1, max_size=3, unique=True), label="args")
    chosen: list[Bad] = []
    touched: set[str] = set()
    for k in keys:
        b = data.draw(st.sampled_from(catalogue[k]), label=k)
        if touched.isdisjoint(b.keys):
            chosen.append(b)
            touched |= b.keys
    return chosen


def sweep(catalogue: dict[str, list[Bad]], run: Callable[[list[Bad]], None]) -> None:
    """Every catalogue entry alone: no other replacement can raise first and hide a silently accepted one."""
    for entries in catalogue.values():
        for b in entries:
            run([b])


def innermost_file(e: BaseException) -> Path:
    tb = e.__traceback__
    assert tb is not None
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(tb.tb_frame.f_code.co_filename).resolve()


def check_outcome(
    call: Callable[[], Any],
    bads: list[Bad],
    expect: Callable[[], tuple[tuple[int, ...], torch.dtype]],
    raisers: tuple[Path, ...] = (PKG,),
) -> Any:
    """Run ``call`` and assert the property; returns the result (None if it raised)."""
    kinds = {b.kind for b in bads}
    labels = [b.label for b in bads]
    try:
        out = call()
    except (ValueError, TypeError, FloatingPointError) as e:
        where = innermost_file(e)
        assert any(where.is_relative_to(r) for r in raisers), f"{labels}: {type(e).__name__} from {where}: {e}"
        assert str(e), f"{labels}: {type(e).__name__} without a message"
        if isinstance(e, FloatingPointError):
            assert NONFINITE in kinds and RAISE not in kinds, f"{labels}: finite-check error for finite input: {e}"
        return None
    assert RAISE not in kinds, f"{labels}: bad input accepted, returned {type(out).__name__}"
    shape, dtype = expect()
    assert isinstance(out, Tensor), f"{labels}: returned {type(out).__name__}"
    assert tuple(out.shape) == shape and out.dtype == dtype, f"{labels}: {tuple(out.shape)} {out.dtype}"
    assert bool(torch.isfinite(out).all()), f"{labels}: non-finite result returned silently"
    return out


def state_dtype_of(args: dict[str, Any]) -> torch.dtype:
    d = args.get("dtype")
    return d if d is not None else torch.promote_types(args["x"].dtype, torch.float32)


# ---- the samplers ----------------------------------------------------------------------------------


def test_every_sampler_is_covered() -> None:
    names = {f.__name__ for f in SAMPLE_FNS}
    assert {"euler_sample", "heun_sample", "stochastic_sample", "generalized_sample", "dpm2_sample"} <= names
    assert len(names) >= 14


def sampler_catalogue(fn: Callable[..., Tensor]) -> dict[str, list[Bad]]:
    return {
        "x": XS, "sigmas": SIGMAS, "denoiser": DENOISERS, "cond": CONDS, "dtype": DTYPES, "noise": NOISES,
        "callback": CALLBACKS, **knob_catalogue(fn),
    }  # fmt: skip


def run_sampler(fn: Callable[..., Tensor], bads: list[Bad]) -> None:
    args: dict[str, Any] = {"denoiser": gauss, "x": x0(), "sigmas": torch.tensor(SIG, dtype=torch.float64)}
    args["noise"] = torch.Generator().manual_seed(1)
    for b in bads:
        b.apply(args)
    den, x, sig = args.pop("denoiser"), args.pop("x"), args.pop("sigmas")
    check_outcome(lambda: fn(den, x, sig, **args), bads, lambda: (tuple(x.shape), state_dtype_of({"x": x, **args})))


@pytest.mark.parametrize("fn", SAMPLE_FNS, ids=lambda f: f.__name__)
def test_sampler_every_bad_input_alone(fn: Callable[..., Tensor]) -> None:
    sweep(sampler_catalogue(fn), lambda bads: run_sampler(fn, bads))


@pytest.mark.parametrize("fn", SAMPLE_FNS, ids=lambda f: f.__name__)
@COMBOS
@given(data=st.data())
def test_sampler_never_returns_a_silent_wrong_answer(fn: Callable[..., Tensor], data: st.DataObject) -> None:
    run_sampler(fn, draw_bad(data, sampler_catalogue(fn)))


# ---- generate ----------------------------------------------------------------------------------------

GENERATE = {
    "seeds": [
        put("seeds", "empty", RAISE, lambda: []),
        put("seeds", "negative", RAISE, lambda: [-1, 2]),
        put("seeds", "str", RAISE, lambda: ["a", "b"]),
        put("seeds", "float", RAISE, lambda: [1.5, 2.0]),
        put("seeds", "None", RAISE, lambda: None),
        put("seeds", "range", OK, lambda: range(B)),
        put("seeds", "tuple", OK, lambda: (5, 7)),
    ],
    "shape": [
        put("shape", "(2.5,)", RAISE, lambda: (2.5,)),
        put("shape", "'12'", RAISE, lambda: "12"),
        put("shape", "(True, 2)", RAISE, lambda: (True, 2)),
        put("shape", "(0,)", RAISE, lambda: (0,)),
        put("shape", "(-1,)", RAISE, lambda: (-1,)),
        put("shape", "None", RAISE, lambda: None),
        put("shape", "int", RAISE, lambda: 3),
        put("shape", "tensor", RAISE, lambda: torch.tensor([3])),
        put("shape", "list", OK, lambda: [3]),
        put("shape", "torch.Size", OK, lambda: torch.Size([1, 3])),
        put("shape", "numpy ints", OK, lambda: (np.int64(2), 2)),
        put("shape", "scalar samples", OK, lambda: ()),
    ],
    "sampler": [
        # generate() takes registry names as well as functions (issue 12); an unknown name is refused
        put("sampler", "'heun'", OK, lambda: "heun"),
        put("sampler", "'unipc'", OK, lambda: "unipc"),
        put("sampler", "'bogus'", RAISE, lambda: "bogus"),
        put("sampler", "'heun_sample'", RAISE, lambda: "heun_sample"),
        put("sampler", "42", RAISE, lambda: 42),
        put("sampler", "None", RAISE, lambda: None),
        *[put("sampler", f.__name__, OK, lambda f=f: f) for f in SAMPLE_FNS],
    ],
    "device": [
        put("device", "meta", RAISE, lambda: "meta"),
        put("device", "meta device", RAISE, lambda: torch.device("meta")),
        put("device", "cpu", OK, lambda: "cpu"),
    ],
    "dtype": [b for b in DTYPES if b.label != "bfloat16"],
    "cond": [b for b in CONDS if b.label not in ("per sample",)],
    "sigmas": [
        *[b for b in SIGMAS if "x" not in b.keys],
        put("sigmas", "1e20 in float32", RAISE, lambda: [1e20, 1.0, 0.0], dtype=lambda: torch.float32),
    ],
    "denoiser": DENOISERS,
    "kwargs": [
        put("kwargs", "noise=", RAISE, lambda: {"noise": PerSampleNoise([1, 2])}),
        put("kwargs", "unknown knob", RAISE, lambda: {"bogus_knob": 1}),
        put("kwargs", "none", OK, lambda: {}),
    ],
}


def run_generate(bads: list[Bad]) -> None:
    args: dict[str, Any] = {"denoiser": gauss, "seeds": [1, 2], "shape": (3,), "sigmas": list(SIG)}
    args.update(sampler=es.heun_sample, device=None, dtype=torch.float32, cond=None, kwargs={})
    for b in bads:
        b.apply(args)
    kw = args.pop("kwargs")

    def expect() -> tuple[tuple[int, ...], torch.dtype]:
        return (len(list(args["seeds"])), *map(int, args["shape"])), args["dtype"] or torch.float32

    check_outcome(lambda: generate(**args, **kw), bads, expect)


def test_generate_every_bad_input_alone() -> None:
    sweep(GENERATE, run_generate)


@COMBOS
@given(data=st.data())
def test_generate_never_returns_a_silent_wrong_answer(data: st.DataObject) -> None:
    run_generate(draw_bad(data, GENERATE))


# ---- GraphedSampler (the eager path on the CPU: the same entry checks as on CUDA) --------------------

GRAPHED_NAMES = ["heun", "euler", "stochastic", "dpmpp_2m", "dpmpp_3m_sde", "unipc", "euler_ancestral", "dpm2"]
GRAPHED = {
    "shape": [
        put("shape", "(2.5, 3)", RAISE, lambda: (2.5, 3)),
        put("shape", "'23'", RAISE, lambda: "23"),
        put("shape", "(True, 3)", RAISE, lambda: (True, 3)),
        put("shape", "(0, 3)", RAISE, lambda: (0, 3)),
        put("shape", "()", RAISE, lambda: ()),
        put("shape", "list", OK, lambda: [B, 3]),
    ],
    "x": [
        put("x", "other shape", RAISE, lambda: x0(shape=(B + 1, 3))),
        put("x", "float64", RAISE, lambda: x0(torch.float64)),
        put("x", "meta", RAISE, lambda: meta(B, 3)),
        put("x", "list", RAISE, lambda: [[1.0] * 3] * B),
        put("x", "nan", NONFINITE, lambda: with_nan(x0())),
    ],
    "dtype": [
        put("dtype", "int64", RAISE, lambda: torch.int64),
        put("dtype", "str", RAISE, lambda: "float32"),
        put("dtype", "float64", OK, lambda: torch.float64, x=lambda: x0(torch.float64)),
    ],
    "device": [
        put("device", "meta", RAISE, lambda: "meta"),
        put("device", "int", RAISE, lambda: 3.5),
        put("device", "cpu", OK, lambda: torch.device("cpu")),
    ],
    "cond": [
        put(
            "cond",
            "example batch + 1",
            RAISE,
            lambda: {"y": torch.ones(B + 1)},
            cond_example=lambda: {"y": torch.ones(B + 1)},
        ),
        put("cond", "example meta", RAISE, lambda: None, cond_example=lambda: {"y": meta(B)}),
        put("cond", "keys differ", RAISE, lambda: None, cond_example=lambda: {"y": torch.ones(B)}),
        put("cond", "same as example", OK, lambda: {"y": torch.zeros(B)}, cond_example=lambda: {"y": torch.ones(B)}),
    ],
    "sampler": [
        put("sampler", "bogus", RAISE, lambda: "bogus"),
        put("sampler", "int", RAISE, lambda: 42),
        put("sampler", "function", RAISE, lambda: es.heun_sample),
    ],
    "knob": [
        put("knob", "unknown option", RAISE, lambda: {"bogus_knob": 1}),
        put("knob", "order=99", RAISE, lambda: {"order": 99}),
        put("knob", "order='2'", RAISE, lambda: {"order": "2"}),
        put("knob", "s_churn=-1", RAISE, lambda: {"s_churn": -1.0}),
        put("knob", "s_noise=nan", RAISE, lambda: {"s_noise": float("nan")}),
        put("knob", "round_sigma s*0", RAISE, lambda: {"round_sigma": lambda s: s * 0}),
        put("knob", "eta=-1", RAISE, lambda: {"eta": -1.0}),
        put("knob", "none", OK, lambda: {}),
    ],
    "noise": [b for b in NOISES if b.label != "seed count != batch"],
    "sigmas": [b for b in SIGMAS if "x" not in b.keys and "dtype" not in b.keys],
    "denoiser": DENOISERS,
}


def run_graphed(name: str, bads: list[Bad]) -> None:
    args: dict[str, Any] = {"denoiser": gauss, "sigmas": list(SIG), "shape": (B, 3), "sampler": name}
    args.update(dtype=torch.float32, device=None, cond_example=None, cond=None, x=x0(), noise=None, knob={})
    for b in bads:
        b.apply(args)
    x, cond, noise, knob = args.pop("x"), args.pop("cond"), args.pop("noise"), args.pop("knob")

    def call() -> Tensor:
        return GraphedSampler(**args, **knob)(x, noise=noise, cond=cond)

    check_outcome(call, bads, lambda: (tuple(int(v) for v in args["shape"]), args["dtype"]))


def test_graphed_sampler_names_meta_device_cond_batch_and_round_sigma() -> None:
    with pytest.raises(ValueError, match="device is the meta device"):
        GraphedSampler(gauss, list(SIG), (B, 3), device="meta")
    with pytest.raises(ValueError, match=r"cond_example\['y'\] has shape \(3, 4\) but x has batch size 2"):
        GraphedSampler(gauss, list(SIG), (B, 3), cond_example={"y": torch.ones(3, 4)})
    with pytest.raises(ValueError, match="round_sigma returned non-positive"):
        GraphedSampler(gauss, list(SIG), (B, 3), sampler="stochastic", s_churn=1.0, round_sigma=lambda s: -s)
    with pytest.raises(ValueError, match="denoiser returned a tensor on meta"):
        GraphedSampler(lambda x, s: x.to("meta"), list(SIG), (B, 3))(x0())
    with pytest.raises(ValueError, match=r"sigmas\[0\] = 1e\+20 is out of the range"):
        GraphedSampler(gauss, [1e20, 1.0, 0.0], (B, 3), sampler="dpmpp_2m")


@pytest.mark.parametrize("name", GRAPHED_NAMES)
def test_graphed_sampler_every_bad_input_alone(name: str) -> None:
    sweep(GRAPHED, lambda bads: run_graphed(name, bads))


@pytest.mark.parametrize("name", GRAPHED_NAMES)
@COMBOS
@given(data=st.data())
def test_graphed_sampler_never_returns_a_silent_wrong_answer(name: str, data: st.DataObject) -> None:
    run_graphed(name, draw_bad(data, GRAPHED))


# ---- from_diffusers ----------------------------------------------------------------------------------

try:
    import diffusers
except ImportError:  # a test extra: only the from_diffusers tests below need it
    diffusers = None
needs_diffusers = pytest.mark.skipif(diffusers is None, reason="needs diffusers (pip install 'edm-samplers[test]')")
BASE_CFG = {"num_train_timesteps": 50, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}
SUPPORTED = [
    *("DDPMScheduler", "DDIMScheduler", "EulerDiscreteScheduler", "HeunDiscreteScheduler", "PNDMScheduler"),
    *("DPMSolverMultistepScheduler", "UniPCMultistepScheduler", "LMSDiscreteScheduler"),
]
# Other model families, accepted with their own adapters (tests/test_diffusers_families.py checks the values).
OTHER_FAMILIES = ["ScoreSdeVeScheduler", "EDMEulerScheduler", "EDMDPMSolverMultistepScheduler", "LCMScheduler"]
OTHER = ["CMStochasticIterativeScheduler"]  # rejected, named
if importlib.util.find_spec("edm_samplers.flow") is None:  # flow matching: rejected until edm_samplers.flow exists
    OTHER += ["FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler"]


def eps_model(x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
    return 0.1 * x_t


Case = tuple[Bad, "Callable[[], Tensor] | None"]


def make(name: str) -> Any:
    return getattr(diffusers, name)(num_train_timesteps=50)


def config_cases() -> list[Case]:
    """Schedulers and configs, tagged, each with the reference alphas_cumprod if it must be accepted."""
    full = {**BASE_CFG, "prediction_type": "epsilon"}
    cases: list[Case] = []
    for name in SUPPORTED:
        for kw in ({}, BASE_CFG):
            # Reference: the class built from keyword arguments (not from_config), its defaults filling the rest.
            cases.append((
                put("cfg", f"{name} config {sorted(kw)}", OK, lambda name=name, kw=kw: {"_class_name": name, **kw}),
                lambda name=name, kw=kw: getattr(diffusers, name)(**kw).alphas_cumprod,
            ))  # fmt: skip
        cases.append(
            (put("cfg", f"{name}()", OK, lambda name=name: make(name)), lambda name=name: make(name).alphas_cumprod)
        )
    for name in OTHER_FAMILIES:
        cases.append((put("cfg", f"{name} config", OK, lambda name=name: {"_class_name": name, **BASE_CFG}), None))
        cases.append((put("cfg", f"{name}()", OK, lambda name=name: make(name)), None))
    for name in [*OTHER, "MyScheduler", ""]:
        cases.append((put("cfg", f"{name} config", RAISE, lambda name=name: {"_class_name": name, **BASE_CFG}), None))
    for name in OTHER:
        cases.append((put("cfg", f"{name}()", RAISE, lambda name=name: make(name)), None))
    cases.append(
        (
            put("cfg", "complete class-less", OK, lambda: full),
            lambda: diffusers.DDPMScheduler(**BASE_CFG).alphas_cumprod,
        )
    )
    for k in full:
        cases.append(
            (put("cfg", f"class-less without {k}", RAISE, lambda k=k: {a: v for a, v in full.items() if a != k}), None)
        )
    for opts in ({"use_flow_sigmas": True}, {"prediction_type": "flow_prediction"}, {"timestep_type": "continuous"}):
        cfg = {"_class_name": "DPMSolverMultistepScheduler", **BASE_CFG, **opts}
        if "timestep_type" in opts:
            cfg["_class_name"] = "EulerDiscreteScheduler"
        cases.append((put("cfg", f"{cfg['_class_name']} {opts}", RAISE, lambda cfg=cfg: cfg), None))
    # An LCM key in a class-less DDPM config: a VP model with the stated betas (LCM models are VP models).
    cases.append((put("cfg", "LCM keys, no class", OK, lambda: {**full, "timestep_scaling": 10.0}), None))
    for value in (42, "DDPMScheduler", None, [1.0], b"cfg", {"_class_name": 3}):
        cases.append((put("cfg", f"{value!r}", RAISE, lambda value=value: value), None))
    return cases


CONFIG_CASES = config_cases()


@st.composite
def configs(draw: st.DrawFn) -> Case:
    if draw(st.booleans()):
        # The other families' option rules differ (tests/test_diffusers_families.py): DDPM-family cases here.
        return draw(st.sampled_from([c for c in CONFIG_CASES if not c[0].label.startswith(tuple(OTHER_FAMILIES))]))
    name = draw(st.text(min_size=1, max_size=12).filter(lambda n: n not in SUPPORTED))
    return put("cfg", f"config of {name!r}", RAISE, lambda: {"_class_name": name, **BASE_CFG}), None


FROM_DIFFUSERS = {
    "prediction": [
        put("prediction", "flow", RAISE, lambda: "flow_prediction"),
        put("prediction", "score", RAISE, lambda: "score"),
        put("prediction", "int", RAISE, lambda: 3),
        *[put("prediction", p, OK, lambda p=p: p) for p in ("eps", "v", "x0", "epsilon", "sample", "v_prediction")],
    ],
    "timestep": [
        put("timestep", "round", RAISE, lambda: "round"),
        put("timestep", "None", RAISE, lambda: None),
        put("timestep", "quantize", OK, lambda: "quantize"),
    ],
    "learned_variance": [
        put("learned_variance", "'no'", RAISE, lambda: "no"),
        put("learned_variance", "1", RAISE, lambda: 1),
        put("learned_variance", "False", OK, lambda: False),
    ],
    "net_dtype": [
        put("net_dtype", "int64", RAISE, lambda: torch.int64),
        put("net_dtype", "str", RAISE, lambda: "float16"),
        put("net_dtype", "float64", OK, lambda: torch.float64),
    ],
}


def run_from_diffusers(case: Case, bads: list[Bad]) -> None:
    cfg_bad, ref = case
    bads = [cfg_bad, *bads]
    args: dict[str, Any] = {}
    for b in bads:
        b.apply(args)
    cfg = args.pop("cfg")
    x = x0(shape=(B, 3, 2, 2))
    sigma = torch.tensor([0.5, 20.0])

    def call() -> Tensor:
        den = es.from_diffusers(eps_model, cfg, **args)
        if ref is not None:  # accepted: its levels are the named class's own
            abar = ref().double()
            torch.testing.assert_close(den.sigmas, torch.sqrt((1 - abar) / abar), rtol=0, atol=0)
        out: Tensor = den(x, sigma)
        return out

    # diffusers' own errors (a config its class rejects) are clear too.
    check_outcome(
        call, bads, lambda: ((B, 3, 2, 2), torch.float32), raisers=(PKG, Path(diffusers.__file__).resolve().parent)
    )


@needs_diffusers
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_from_diffusers_every_bad_input_alone() -> None:
    base = CONFIG_CASES[1]  # DDPMScheduler with the full base config
    assert base[0].kind == OK and "DDPMScheduler config" in base[0].label
    for case in CONFIG_CASES:
        run_from_diffusers(case, [])
    sweep(FROM_DIFFUSERS, lambda bads: run_from_diffusers(base, bads))


@needs_diffusers
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@COMBOS
@given(case=configs(), data=st.data())
def test_from_diffusers_never_returns_a_silent_wrong_answer(case: Case, data: st.DataObject) -> None:
    run_from_diffusers(case, draw_bad(data, FROM_DIFFUSERS) if data.draw(st.booleans()) else [])
