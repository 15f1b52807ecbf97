"""Property tests (issue 11): random bad input never yields a silent wrong answer.

For each public entry point of the schedules, schedule files, noise sources, losses, preconditioners and the
safetensors reader, Hypothesis starts from valid arguments and replaces zero, one or two of them by weird
values (wrong types, NaN/inf, negative, zero, huge, tiny, bool, float for int, wrong dtype or shape, empty).
Every call must either raise one of the documented errors or return a result that passes a validity check
written here, independently of the library's own checks (e.g. a schedule: 1-D floating, finite, positive and
strictly decreasing, then one 0). ``event("raised")`` makes the share of rejected examples visible with
``--hypothesis-show-statistics`` (the unmodified arguments keep the success path covered).
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st
from torch import Tensor

import edm_samplers as es
from edm_samplers import _safetensors as sft
from edm_samplers.precond import EDMPrecond, VEPrecond, VPPrecond, iDDPMPrecond
from edm_samplers.schedule_opt import load_schedule, optimize_schedule, save_schedule
from strategies import corrupted, weird_dtypes, weird_floats, weird_ints, weird_objects, weird_tensors, weird_values

BAD = (ValueError, TypeError)


@pytest.fixture(autouse=True, scope="module")
def _keep_global_rng() -> Iterator[None]:
    # Calls without generator= draw from torch's global RNG; restore it so later tests see the same stream.
    with torch.random.fork_rng(devices=[]):
        yield


def assert_schedule(s: object, *, final_zero: bool | None = True, strict: bool = True) -> None:
    """A valid schedule: 1-D floating tensor, finite, positive levels (strictly) decreasing, 0 only at the end."""
    assert isinstance(s, Tensor) and s.ndim == 1 and s.is_floating_point(), s
    if s.device.type == "meta":
        return  # built and checked on the CPU, then moved: no values to look at
    v = s.double()
    assert bool(torch.isfinite(v).all()), v
    ends = bool(v[-1] == 0)
    assert final_zero is None or ends == final_zero, v
    pos = v[:-1] if ends else v
    assert pos.numel() >= 1 and bool((pos > 0).all()), v
    steps = pos[1:] < pos[:-1] if strict else pos[1:] <= pos[:-1]
    assert bool(steps.all()), v


def _ends_in_zero(sigmas: Any) -> bool:
    return bool(torch.as_tensor(sigmas)[-1] == 0)


# ---- schedules -----------------------------------------------------------------------------------

BUILDERS: dict[str, tuple[Any, dict[str, object]]] = {
    "karras_sigmas": (es.karras_sigmas, {"sigma_min": 0.002, "sigma_max": 80.0, "rho": 7.0}),
    "loglinear_sigmas": (es.loglinear_sigmas, {"sigma_min": 0.002, "sigma_max": 80.0}),
    "ve_sigmas": (es.ve_sigmas, {"sigma_min": 0.02, "sigma_max": 100.0}),
    "vp_sigmas": (es.vp_sigmas, {"beta_d": 19.9, "beta_min": 0.1, "eps_s": 1e-3}),
    "iddpm_sigmas": (es.iddpm_sigmas, {"sigma_min": 0.002, "sigma_max": 80.0, "m": 40}),
}
# The iDDPM grid is a host recursion: keep M small, plus values past the documented limit of 10^6.
small_m = st.one_of(st.integers(-1, 60), weird_objects, st.sampled_from([2**31, 10**7]))
SCHEDULE_BAD = {
    "num_steps": st.one_of(weird_ints, weird_objects, weird_floats),
    "m": small_m,
    "dtype": weird_dtypes,
    "device": st.sampled_from(["cpu", "meta", "gpu0", 3, torch.device("cpu")]),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
@given(data=st.data())
def test_schedule_builders_return_a_valid_schedule_or_raise(name: str, data: st.DataObject) -> None:
    builder, defaults = BUILDERS[name]
    kw = data.draw(corrupted({"num_steps": 5, **defaults, "dtype": torch.float64, "device": None}, SCHEDULE_BAD))
    n = kw.pop("num_steps")
    try:
        s = builder(n, **kw)
    except BAD:
        event("raised")
        return
    assert isinstance(n, int) and s.shape == (n + 1,) and s.dtype == kw["dtype"]
    assert_schedule(s)


@given(sigmas=st.one_of(weird_tensors(), weird_values, st.just(torch.tensor([3.0, 1.0]))))
def test_append_zero(sigmas: Any) -> None:
    try:
        s = es.append_zero(sigmas)
    except BAD:
        event("raised")
        return
    assert s.dtype == sigmas.dtype and s.shape == (sigmas.numel() + 1,)
    assert_schedule(s)


@given(
    sigmas=st.one_of(weird_tensors(), weird_values, st.just(es.karras_sigmas(6)), st.just([9.0, 3.0, 1.0])),
    kw=corrupted({"sigma_min": 0.01, "sigma_max": 20.0}),
)
def test_clamp_sigmas(sigmas: Any, kw: dict[str, Any]) -> None:
    try:
        s = es.clamp_sigmas(sigmas, kw["sigma_min"], kw["sigma_max"])
    except BAD:
        event("raised")
        return
    assert_schedule(s, final_zero=_ends_in_zero(sigmas))
    pos = s[s > 0].double()
    # None is "no bound" (issue 12: clamp_sigmas also fits a schedule to a denoiser's range, which None defers to)
    lo = 0.0 if kw["sigma_min"] is None else kw["sigma_min"]
    hi = math.inf if kw["sigma_max"] is None else kw["sigma_max"]
    # the levels lie in the range, up to the rounding of the cast back to sigmas' dtype (float16: 2^-11)
    assert bool((pos >= lo * (1 - 1e-3)).all() and (pos <= hi * (1 + 1e-3)).all())


@given(
    kw=corrupted(
        {"t": torch.tensor([0.0, 0.3, 1.0]), "beta_d": 19.9, "beta_min": 0.1},
        {"t": st.one_of(weird_tensors(), weird_values)},
    ),
    inverse=st.booleans(),
)
def test_vp_sigma_and_inverse(kw: dict[str, Any], inverse: bool) -> None:
    fn = es.vp_sigma_inv if inverse else es.vp_sigma
    try:
        out = fn(kw["t"], kw["beta_d"], kw["beta_min"])
    except BAD:
        event("raised")
        return
    tt = torch.as_tensor(kw["t"], dtype=torch.float64)
    assert out.shape == tt.shape and out.is_floating_point()
    assert bool(torch.isfinite(out).all()) and bool((out >= 0).all())
    if out.numel() > 1:  # both maps increase with their argument
        o = out.reshape(-1)[torch.argsort(tt.reshape(-1))]
        assert bool((o[1:] >= o[:-1]).all())


@given(kw=corrupted({"c1": 0.001, "c2": 0.008, "m": 50}, {"m": small_m}))
def test_iddpm_grid(kw: dict[str, Any]) -> None:
    try:
        u = es.iddpm_grid(**kw)
    except BAD:
        event("raised")
        return
    assert u.shape == (kw["m"] + 1,)
    assert_schedule(u)


# ---- schedule files ---------------------------------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), weird_floats, st.text(max_size=3))
json_values = st.recursive(
    json_scalars,
    lambda c: st.one_of(st.lists(c, max_size=5), st.dictionaries(st.text(max_size=3), c, max_size=3)),
    max_leaves=12,
)
schedule_like = st.one_of(
    st.lists(st.one_of(st.floats(0, 100), weird_floats, st.just(0.0)), min_size=0, max_size=6),
    st.lists(st.floats(1e-3, 100), min_size=1, max_size=6).map(lambda v: [*sorted(v, reverse=True), 0.0]),
)
file_contents = st.one_of(
    json_values.map(json.dumps),
    schedule_like.map(json.dumps),  # NaN/Infinity appear as Python's json writes them
    st.builds(
        lambda v, extra: json.dumps({"sigmas": v, **extra}),
        schedule_like,
        st.dictionaries(st.text(max_size=3), json_scalars, max_size=2),
    ),
    st.binary(max_size=20).map(lambda b: b.decode("latin-1")),
)


@given(content=file_contents, dtype=st.one_of(st.just(torch.float64), weird_dtypes))
def test_load_schedule(content: str, dtype: Any) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "s.json")
        with open(p, "w", encoding="utf-8") as f:
            f.write(content)
        try:
            s = load_schedule(p, dtype=dtype)
        except BAD:
            event("raised")
            return
    assert s.dtype == dtype
    assert_schedule(s, final_zero=None, strict=False)  # a file may hold equal neighbours, as check_sigmas allows
    data = json.loads(content)
    values = data["sigmas"] if isinstance(data, dict) else data
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    torch.testing.assert_close(s.double(), torch.tensor(values, dtype=torch.float64).to(dtype).double())


@given(
    sigmas=st.one_of(weird_tensors(), weird_values, schedule_like),
    meta=st.dictionaries(st.sampled_from(["a", "b"]), st.one_of(json_values, weird_objects), max_size=2),
)
def test_save_schedule(sigmas: Any, meta: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "s.json")
        save_schedule(p, es.karras_sigmas(2), keep="me")
        with open(p, "rb") as f:
            before = f.read()
        try:
            save_schedule(p, sigmas, **meta)
        except BAD:
            event("raised")
            with open(p, "rb") as f:
                assert f.read() == before, "a failed save never touches the existing file"
            assert os.listdir(d) == ["s.json"]
            return
        back = load_schedule(p)
        assert os.listdir(d) == ["s.json"]
    want = sigmas.double() if isinstance(sigmas, Tensor) else torch.tensor(sigmas, dtype=torch.float64)
    assert torch.equal(back, want)


@given(
    kw=corrupted(
        {"solver": "heun", "nfe": 5, "dtype": torch.float64},
        {
            "solver": st.one_of(st.sampled_from(["euler", "unipc3", "nope"]), weird_values),
            "nfe": st.one_of(st.just(10), weird_values),
            "dtype": weird_dtypes,
        },
    )
)
def test_digits_schedule(kw: dict[str, Any]) -> None:
    try:
        s = es.models.digits_schedule(kw["solver"], kw["nfe"], dtype=kw["dtype"])
    except (*BAD, KeyError):
        event("raised")
        return
    assert isinstance(kw["nfe"], int) and s.dtype == kw["dtype"]
    assert_schedule(s)


def _optimize_problem() -> tuple[es.evaluation.GaussianMixture, Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    gm = es.evaluation.GaussianMixture(torch.randn(2, 3, generator=g, dtype=torch.float64), 0.2)
    x = torch.randn(4, 3, generator=g, dtype=torch.float64) * 80
    return gm, x, es.heun_sample(gm, x, es.karras_sigmas(64))


@settings(max_examples=15)  # each example runs up to a dozen small sampling runs
@given(data=st.data(), kind=st.sampled_from(["ok", "ok", "nan", "int", "shape"]))
def test_optimize_schedule(data: st.DataObject, kind: str) -> None:
    gm, x, ref = _optimize_problem()
    den = {
        "ok": gm,
        "nan": lambda y, s, **c: y * float("nan"),
        "int": lambda y, s, **c: y.long(),
        "shape": lambda y, s, **c: y[:, :2],
    }[kind]
    defaults: dict[str, object] = {
        "num_steps": 3, "sigma_max": None, "sigma_min": None, "sigma_floor": 5e-4, "max_evals": 6, "step": 0.5,
        "init": None, "reference": ref,
    }  # fmt: skip
    bad = {
        "num_steps": st.one_of(st.integers(-1, 4), weird_objects),
        "max_evals": st.one_of(st.integers(-2, 12), weird_objects),  # bounded: a huge budget is valid but slow
        "init": st.one_of(weird_tensors(), st.just(es.karras_sigmas(3)), st.just(es.karras_sigmas(3, 0.01, 10.0))),
        "reference": st.one_of(weird_tensors(), st.just(ref * math.nan), st.just(ref.long())),
    }
    kw = data.draw(corrupted(defaults, bad))
    n = kw.pop("num_steps")
    try:
        r = optimize_schedule(den, x, n, **kw)
    except (*BAD, FloatingPointError):
        event("raised")
        return
    assert kind == "ok" and math.isfinite(r.error) and r.error <= r.initial_error
    assert r.sigmas.shape == (n + 1,)
    assert_schedule(r.sigmas)


# ---- noise sources ------------------------------------------------------------------------------

shapes_st = st.one_of(
    st.lists(st.integers(0, 3), min_size=1, max_size=3).map(tuple), st.lists(weird_values, max_size=3), weird_values
)
# From its own generator: module-level draws from the global RNG would shift every later test's stream.
_DRAWS = torch.randn(3, 2, 3, generator=torch.Generator().manual_seed(0))
NOISE_BAD = {
    "seeds": st.one_of(st.lists(st.one_of(st.integers(0, 2**64 - 1), weird_values), max_size=3), weird_values),
    "draws": weird_tensors(),
    "shape": shapes_st,
    "dtype": weird_dtypes,
    "device": st.sampled_from([None, "gpu", 3, torch.device("cpu")]),
}


@given(
    which=st.sampled_from(["per_sample", "global", "precomputed"]),
    kw=corrupted(
        {"seeds": [3, 4], "draws": _DRAWS, "shape": (2, 3), "dtype": torch.float32, "device": "cpu"},
        NOISE_BAD,
    ),
)
def test_noise_sources(which: str, kw: dict[str, Any]) -> None:
    make = {
        "per_sample": lambda: es.PerSampleNoise(kw["seeds"]),
        "global": lambda: es.GlobalNoise(torch.Generator().manual_seed(0)),
        "precomputed": lambda: es.PrecomputedNoise(kw["draws"]),
    }[which]
    shape, dtype = kw["shape"], kw["dtype"]
    try:
        out = make().randn(shape, dtype=dtype, device=kw["device"])
    except BAD:
        event("raised")
        return
    assert isinstance(dtype, torch.dtype) and dtype.is_floating_point and out.dtype == dtype
    assert all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
    assert tuple(out.shape) == tuple(shape) and bool(torch.isfinite(out).all())


# ---- losses -------------------------------------------------------------------------------------


def _images() -> Tensor:
    return torch.randn(3, 2, 2, generator=torch.Generator().manual_seed(0))


OUTPUTS = {
    "ok": lambda y, s: y / (1 + s.reshape(-1, 1, 1) ** 2),
    "int": lambda y, s: (y * 5).long(),
    "nan": lambda y, s: y * float("nan"),
    "inf": lambda y, s: y + float("inf"),
    "half": lambda y, s: y.half(),
    "shape": lambda y, s: y[:, :1],
    "list": lambda y, s: y.tolist(),
}
LOSS_PARAMS: dict[Any, dict[str, object]] = {
    es.training.EDMLoss: {"p_mean": -1.2, "p_std": 1.2, "sigma_data": 0.5},
    es.training.VPLoss: {"beta_d": 19.9, "beta_min": 0.1, "eps_t": 1e-5},
    es.training.VELoss: {"sigma_min": 0.02, "sigma_max": 100.0},
}


@given(
    data=st.data(),
    cls=st.sampled_from([es.training.EDMLoss, es.training.VPLoss, es.training.VELoss]),
    out=st.sampled_from(["ok", "ok", "ok", *sorted(OUTPUTS)]),
)
def test_losses(data: st.DataObject, cls: Any, out: str) -> None:
    kw = data.draw(corrupted({**LOSS_PARAMS[cls], "images": _images()}, {"images": weird_tensors()}))
    images = kw.pop("images")
    try:
        loss = cls(**kw)(OUTPUTS[out], images, generator=torch.Generator().manual_seed(0))
    except (*BAD, FloatingPointError):
        event("raised")
        return
    assert out in ("ok", "half") and loss.shape == images.shape and loss.is_floating_point()
    assert bool(torch.isfinite(loss).all())


SAMPLERS: dict[str, tuple[Any, dict[str, object]]] = {
    "lognormal": (es.training.lognormal_sigmas, {"p_mean": -1.2, "p_std": 1.2}),
    "loguniform": (es.training.loguniform_sigmas, {"sigma_min": 0.02, "sigma_max": 100.0}),
    "vp": (es.training.vp_training_sigmas, {"beta_d": 19.9, "beta_min": 0.1, "eps_t": 1e-5}),
}


@given(which=st.sampled_from(sorted(SAMPLERS)), data=st.data())
def test_training_sigma_samplers(which: str, data: st.DataObject) -> None:
    fn, params = SAMPLERS[which]
    kw = data.draw(corrupted({"n": 64, "dtype": torch.float32, **params}, {"dtype": weird_dtypes}))
    n, dtype = kw.pop("n"), kw.pop("dtype")
    try:
        s = fn(n, dtype=dtype, generator=torch.Generator().manual_seed(0), **kw)
    except BAD:
        event("raised")
        return
    assert s.shape == (n,) and s.dtype == dtype
    assert bool(torch.isfinite(s).all()) and bool((s > 0).all())


@given(
    kw=corrupted(
        {"sigma": torch.tensor([0.01, 1.0, 80.0]), "sigma_data": 0.5},
        {"sigma": st.one_of(weird_tensors(), weird_values)},
    ),
    edm=st.booleans(),
)
def test_loss_weights(kw: dict[str, Any], edm: bool) -> None:
    sigma, sigma_data = kw["sigma"], kw["sigma_data"]
    try:
        w = es.training.edm_weight(sigma, sigma_data) if edm else es.training.inverse_square_weight(sigma)
    except BAD:
        event("raised")
        return
    s = sigma.double() if isinstance(sigma, Tensor) else torch.tensor(float(sigma), dtype=torch.float64)
    assert w.shape == s.shape and bool((s >= 0).all()) and bool(torch.isfinite(s).all())
    ref = 1 / s**2 + (1 / float(sigma_data)) ** 2 if edm else 1 / s**2
    # Computed in sigma's dtype (float16 included): compare at that dtype's resolution, where representable.
    tol = {torch.float16: 2e-3, torch.float32: 2e-6}.get(w.dtype, 1e-12)
    finite = torch.isfinite(ref) & (ref < torch.finfo(w.dtype).max)
    torch.testing.assert_close(w.double()[finite], ref[finite], rtol=tol, atol=0)


# ---- preconditioners ----------------------------------------------------------------------------


def _lin_net(x_in: Tensor, c_noise: Tensor, **cond: Any) -> Tensor:
    return 0.5 * x_in + c_noise.reshape(-1, *([1] * (x_in.ndim - 1))).to(x_in.dtype)


@given(
    wrapper=st.sampled_from([EDMPrecond, VPPrecond, VEPrecond, iDDPMPrecond]),
    kw=corrupted(
        {"sigma": torch.tensor([0.05, 1.0, 30.0]), "x": torch.linspace(-2, 2, 6).reshape(3, 2)},
        {"sigma": st.one_of(weird_tensors(max_len=3), weird_values), "x": weird_tensors(max_len=3)},
    ),
)
def test_precond_forward(wrapper: Any, kw: dict[str, Any]) -> None:
    sigma, x = kw["sigma"], kw["x"]
    den = wrapper(_lin_net)
    try:
        d = den(x, sigma)
    except BAD:
        event("raised")
        return
    assert d.shape == x.shape and d.is_floating_point()
    if x.numel() == 0:
        return
    # x itself is not checked (a sync per call): a finite x must give a finite D.
    assert bool(torch.isfinite(d).all()) or not bool(torch.isfinite(x).all())
    # Independently: D = c_skip x + c_out F(c_in x, c_noise) with F = 0.5 x_in + c_noise, in float64, at sigma
    # rounded to the compute dtype (x's dtype promoted to float32) as the wrapper uses it.
    cdt = torch.promote_types(x.dtype, torch.float32)
    s = torch.as_tensor(sigma, dtype=torch.float64).to(cdt).double().expand(x.shape[0])
    assert bool((s > 0).all())
    sc = den.scalings(s)
    xf = x.double()
    bc = (-1,) + (1,) * (x.ndim - 1)
    skip, out, c_in, noise = (c.reshape(bc) for c in sc)
    want = skip * xf + out * (0.5 * c_in * xf + noise)
    # Round-off of the compute dtype relative to the size of the terms (which may cancel in the sum).
    terms = (skip * xf).abs() + out.abs() * ((0.5 * c_in * xf).abs() + noise.abs())
    eps = torch.finfo(cdt).eps
    ok = torch.isfinite(want)
    assert bool(((d.double() - want).abs() <= 16 * eps * terms + 1e-300)[ok].all()), (d, want)


ROUNDERS: dict[str, Any] = {
    "id": lambda s: s,
    "neg": lambda s: -s,
    "zero": lambda s: 0 * s,
    "flip": lambda s: s.flip(0),
    "list": lambda s: s.tolist(),
}


@given(
    kw=corrupted(
        {"sigmas": es.karras_sigmas(8), "sigma_min": 0.01, "sigma_max": 50.0},
        {"sigmas": st.one_of(weird_tensors(), weird_values)},
    ),
    rs=st.sampled_from(["none", *sorted(ROUNDERS)]),
)
def test_clamp_sigmas_to_a_denoiser(kw: dict[str, Any], rs: str) -> None:
    class Den:
        sigma_min, sigma_max = kw["sigma_min"], kw["sigma_max"]

    if rs in ROUNDERS:
        Den.round_sigma = staticmethod(ROUNDERS[rs])  # type: ignore[attr-defined]
    try:
        out = es.clamp_sigmas(kw["sigmas"], denoiser=Den())
    except BAD:
        event("raised")
        return
    assert rs not in ("neg", "zero")
    assert_schedule(out, final_zero=_ends_in_zero(kw["sigmas"]))


# ---- safetensors --------------------------------------------------------------------------------

st_dtypes = st.sampled_from(["F32", "F64", "F16", "BF16", "I64", "I8", "U8", "BOOL", "U16", "F99", 3, None])
entry = st.fixed_dictionaries(
    {
        "dtype": st_dtypes,
        "shape": st.lists(st.one_of(st.integers(0, 3), json_scalars), max_size=3),
        "data_offsets": st.lists(st.one_of(st.integers(0, 40), json_scalars), min_size=0, max_size=3),
    }
)
headers = st.dictionaries(st.sampled_from(["a", "b", "__metadata__"]), st.one_of(entry, json_values), max_size=3)


@st.composite
def safetensors_bytes(draw: st.DrawFn) -> bytes:
    """Random headers over random buffers, mutations (byte flips, cuts, appends) of a valid file, or garbage."""
    kind = draw(st.sampled_from(["header", "mutated", "garbage"]))
    if kind == "garbage":
        return draw(st.binary(max_size=40))
    if kind == "header":
        h = json.dumps(draw(headers)).encode()
        return struct.pack("<Q", len(h)) + h + bytes(draw(st.integers(0, 48)))
    data = bytearray(sft.save({"a": torch.arange(3, dtype=torch.float32), "b": torch.ones(2, 2, dtype=torch.int8)}))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["flip", "cut", "append"]))
        if op == "flip" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[draw(st.integers(0, len(data))) :]
        else:
            data += draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@settings(max_examples=60)  # cheap examples; the format has many independent ways to be malformed
@given(data=safetensors_bytes())
def test_safetensors_reader(data: bytes) -> None:
    try:
        ours = sft.load(data)
    except ValueError:
        event("raised")
        return
    # Whatever we accept, the reference implementation accepts too, with the same tensors.
    ref = pytest.importorskip("safetensors.torch").load(data)
    assert ours.keys() == ref.keys()
    for k in ours:
        assert ours[k].dtype == ref[k].dtype and ours[k].shape == ref[k].shape
        raw_ours = ours[k].reshape(-1).view(torch.uint8) if ours[k].numel() else ours[k]
        raw_ref = ref[k].reshape(-1).view(torch.uint8) if ref[k].numel() else ref[k]
        assert torch.equal(raw_ours, raw_ref)
