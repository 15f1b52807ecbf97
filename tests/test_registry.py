"""The solver registry: one description per sampler, read by the public functions; typed knobs (checks, text
form, docs); labels; registration; error messages that name the valid knobs."""

from __future__ import annotations

import inspect
import math
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import edm_samplers as es
from edm_samplers.solvers import registry
from edm_samplers.solvers.api import RunOptions
from edm_samplers.solvers.knobs import Knob
from edm_samplers.solvers.registry import REGISTRY, SolverSpec, get, label, parse_knobs, parse_label, register

BUILTIN = ("euler", "heun", "stochastic", "generalized", "dpmpp_2m", "dpmpp_3m", "dpmpp_2m_sde", "dpmpp_3m_sde",
           "deis", "lms", "ipndm", "unipc", "euler_ancestral", "dpm2", "euler_cfgpp", "dpmpp_2m_cfgpp")  # fmt: skip


def test_every_builtin_has_one_entry_and_one_public_function() -> None:
    assert registry.names() == BUILTIN
    for name, spec in REGISTRY.items():
        fn = getattr(es, f"{name}_sample")
        assert fn.__name__ == f"{name}_sample" and spec.name == name
        params = inspect.signature(fn).parameters
        # explicit, typed signature: the knobs (registry defaults) and every run option, spelled out
        assert [(p.name, p.default) for p in params.values() if p.name in spec.knob_names] == [
            (k.name, k.default) for k in spec.knobs
        ]
        run_opts = list(RunOptions.__annotations__)
        assert list(params)[:3] == ["denoiser", "x", "sigmas"] and list(params)[-len(run_opts) :] == run_opts
        assert all(p.annotation is not inspect.Parameter.empty for p in params.values())
        doc = fn.__doc__ or ""
        for k in spec.knobs:  # each knob's line, generated from its declaration
            assert k.doc_line() in doc
        assert f'Registry name ``"{name}"``' in doc and "grad mode" in doc


def test_knob_checks_parse_and_format() -> None:
    order = Knob("order", "int", 3, "the order", low=1, high=3)
    assert order.check(2) == 2 and order.parse(" 2 ") == 2 and order.format(2) == "2"
    with pytest.raises(TypeError, match=r"order must be an int, got float 2\.0"):
        order.check(2.0)
    with pytest.raises(TypeError, match=r"order must be int between 1 and 3, got '2\.5'"):
        order.parse("2.5")
    with pytest.raises(ValueError, match="order must be between 1 and 3, got 4"):
        order.parse("4")
    alpha = Knob("alpha", "float", 1.0, "a", low=0.0, high=1.0, open_low=True)
    assert alpha.parse("0.5") == 0.5 and alpha.range_text() == "in (0, 1]"
    with pytest.raises(ValueError, match="alpha must be > 0"):
        alpha.check(0.0)
    tmax = Knob("s_tmax", "float", math.inf, "t", low=0.0, allow_inf=True)
    assert tmax.parse("inf") == math.inf and tmax.format(math.inf) == "inf"
    flag = Knob("flag", "bool", False, "f")
    assert flag.parse("True") is True and flag.parse("0") is False and flag.format(True) == "true"
    with pytest.raises(TypeError, match="flag must be True or False, got 1"):
        flag.check(1)
    form = Knob("form", "str", "noise", "f", choices=("noise", "data"))
    with pytest.raises(ValueError, match="form must be 'noise' or 'data', got 'eps'"):
        form.parse("eps")
    with pytest.raises(TypeError, match="cannot be given as text"):
        Knob("round_sigma", "callable", None, "r").parse("round")


@given(name=st.sampled_from([n for n in BUILTIN if get(n).knobs]), data=st.data())
def test_labels_round_trip(name: str, data: st.DataObject) -> None:
    spec = get(name)
    knobs: dict[str, Any] = {}
    for k in spec.knobs:
        if k.type == "callable" or not data.draw(st.booleans()):
            continue
        if k.type == "bool":
            knobs[k.name] = data.draw(st.booleans())
        elif k.type == "str":
            knobs[k.name] = data.draw(st.sampled_from(k.choices))
        elif k.type == "int":
            knobs[k.name] = data.draw(st.integers(int(k.low or 1), int(k.high or 4)))
        else:
            knobs[k.name] = data.draw(st.floats(0.01, 0.99))
    if knobs.get("s_tmin", 0.0) > knobs.get("s_tmax", math.inf):
        knobs["s_tmax"] = knobs["s_tmin"]
    assert parse_label(label(name, knobs)) == (name, knobs)
    full = parse_label(label(name, knobs, full=True))
    assert full == (name, {k: v for k, v in spec.resolve(knobs).items() if v is not None})


def test_parse_knobs_and_unknown_knob_message() -> None:
    assert parse_knobs("unipc", ["order=2", "order_rule=full"]) == {"order": 2, "order_rule": "full"}
    with pytest.raises(ValueError, match="s_tmin must be <= s_tmax"):
        parse_knobs("stochastic", ["s_tmin=2", "s_tmax=1"])
    with pytest.raises(TypeError) as e:
        get("heun").resolve({"s_churn": 1.0})
    msg = str(e.value)
    assert "\n" not in msg
    assert msg == (
        "heun_sample got unknown option(s) 's_churn'; it accepts none; "
        "'s_churn' is a knob of sampler='stochastic', 'generalized'"
    )
    with pytest.raises(ValueError, match=r"sampler must be one of 'euler', 'heun'.*got 'rk4'"):
        get("rk4")


def test_register_rejects_duplicates_and_bad_names() -> None:
    spec = get("euler")
    with pytest.raises(ValueError, match="already registered"):
        register(spec)
    with pytest.raises(ValueError, match="identifier"):
        register(SolverSpec("my-solver", "s", 1, spec.nfe, False, (), spec.build))
    with pytest.raises(TypeError, match="SolverSpec"):
        register("euler")  # type: ignore[arg-type]


def test_steps_for_nfe() -> None:
    assert get("heun").steps_for(10) == 5 and get("heun").count(es.karras_sigmas(5)) == 9
    assert get("unipc").steps_for(10) == 10 and get("dpm2").steps_for(1) == 1
    assert get("stochastic").steps_for(10, {"solver": "euler"}) == 10


def test_generate_takes_names_and_functions_alike() -> None:
    gm = es.evaluation.GaussianMixture(torch.zeros(1, 2, dtype=torch.float64), 0.5)
    sig = es.karras_sigmas(4)
    a = es.generate(gm, [1, 2], (2,), sig, sampler="unipc", dtype=torch.float64, order=2)
    b = es.generate(gm, [1, 2], (2,), sig, sampler=es.unipc_sample, dtype=torch.float64, order=2)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="sampler must be one of"):
        es.generate(gm, [1], (2,), sig, sampler="rk4")
    with pytest.raises(TypeError, match="sampler must be a registry name"):
        es.generate(gm, [1], (2,), sig, sampler=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unipc_sample got unknown option"):
        es.unipc_sample(gm, torch.zeros(1, 2), sig, bogus=1)  # type: ignore[call-arg]


def test_run_options_are_checked() -> None:
    gm = es.evaluation.GaussianMixture(torch.zeros(1, 2, dtype=torch.float64), 0.5)
    with pytest.raises(TypeError, match="progress must be True or False"):
        es.heun_sample(gm, torch.zeros(1, 2), es.karras_sigmas(3), progress=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="check_finite must be True or False"):
        es.unipc_sample(gm, torch.zeros(1, 2), es.karras_sigmas(3), check_finite="no")  # type: ignore[arg-type]
