"""The solver registry: one frozen description per sampling method, read by everything that names, counts or
configures samplers.

A :class:`SolverSpec` holds a method's registry name (``"unipc"``: the public function is ``unipc_sample``),
its order and NFE rule, whether it draws noise, its typed knobs (:class:`~.knobs.Knob`: defaults, ranges,
docs) and its *builder* (see :mod:`.runtime`). The public ``*_sample`` functions, :func:`count_nfe`,
:class:`~edm_samplers.GraphedSampler`, :func:`~edm_samplers.generate`, :func:`~edm_samplers.optimize_schedule`,
the command line (``--sampler``, ``--opt k=v``), the benchmark scripts and the tuned-schedule keys
(``"unipc:order=3,order_rule=full"``) all read these entries. Adding a solver is a builder plus a
:func:`register` call (``docs/architecture.md`` shows one in twenty lines).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from .._validate import check_has_data, check_sigmas
from ..afs import afs_enabled
from .cfgpp import build_cfgpp
from .dpm2 import build_dpm2
from .edm import build_edm
from .generalized import build_generalized
from .knobs import Knob, knob_values
from .linear import build_linear
from .plans import LOW_ORDER_SIGMA, MAX_LOG_STEP
from .runtime import TABLES, Builder

__all__ = ["REGISTRY", "SolverSpec", "count_nfe", "get", "label", "names", "parse_label", "register"]

NfeRule = Callable[[int, bool, Mapping[str, Any]], int]
"""``nfe(steps, ends_in_zero, knobs) -> network evaluations`` of one run."""


def one_per_step(n: int, end_zero: bool, knobs: Mapping[str, Any]) -> int:
    """N: one evaluation per step."""
    del end_zero, knobs
    return n


def two_per_step(n: int, end_zero: bool, knobs: Mapping[str, Any]) -> int:
    """2N, less one when the schedule ends in 0 (that step is Euler)."""
    del knobs
    return 2 * n - int(end_zero)


def euler_first(rule: NfeRule) -> NfeRule:
    """``rule`` for a schedule starting at sigma = inf, whose first step is the 1-NFE step from pure noise."""

    def nfe(n: int, end_zero: bool, knobs: Mapping[str, Any]) -> int:
        return 1 + rule(n - 1, end_zero, knobs) if n > 1 else n

    nfe.__doc__ = f"1 for the step from inf, then {rule.__doc__}"
    return nfe


def by_solver_knob(n: int, end_zero: bool, knobs: Mapping[str, Any]) -> int:
    """Heun-like (``solver="heun"``) or Euler-like (``solver="euler"``) counting."""
    return two_per_step(n, end_zero, knobs) if knobs["solver"] == "heun" else n


@dataclass(frozen=True)
class SolverSpec:
    """One sampling method.

    Attributes:
        name: the registry name (``sampler=`` everywhere; the public function is ``<name>_sample``).
        summary: one line (the command line's help, docs tables).
        order: the convergence order with default knobs.
        nfe: the NFE rule ``nfe(steps, ends_in_zero, knobs)``.
        stochastic: whether it may draw noise (one state-shaped draw per step that adds noise; see noise.step_drawer).
        knobs: its typed options, in signature order.
        build: ``build(schedule, knobs, batch, dtype, device) -> Program`` (see :mod:`.runtime`).
        strict: whether schedules must be strictly decreasing (interpolating solvers).
        check: optional cross-knob check on the resolved knobs (e.g. ``s_tmin <= s_tmax``).
        guided: whether it needs a guided denoiser (:func:`~edm_samplers.guided`; the CFG++ samplers read the
            unconditional estimate): consumers that run every sampler on a plain denoiser skip these.
        nfe_inf: the NFE rule for schedules starting at sigma = inf, where the first step may cost less (Heun-like
            solvers take the 1-NFE step :func:`~.steps.inf_step` there); None: the same as ``nfe``.
    """

    name: str
    summary: str
    order: int
    nfe: NfeRule
    stochastic: bool
    knobs: tuple[Knob, ...]
    build: Builder
    strict: bool = False
    check: Callable[[dict[str, Any]], None] | None = None
    guided: bool = False
    nfe_inf: NfeRule | None = None

    @property
    def knob_names(self) -> tuple[str, ...]:
        return tuple(k.name for k in self.knobs)

    def knob(self, name: str) -> Knob:
        for k in self.knobs:
            if k.name == name:
                return k
        raise self.unknown_knobs([name])

    def defaults(self) -> dict[str, Any]:
        return {k.name: k.default for k in self.knobs}

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Every knob's value: ``given`` ones checked, the rest at their defaults; unknown names raise TypeError."""
        unknown = [k for k in given if k not in self.knob_names]
        if unknown:
            raise self.unknown_knobs(unknown)
        values = knob_values(self.knobs, dict(given))
        if self.check is not None:
            self.check(values)
        return values

    def unknown_knobs(self, unknown: Sequence[str]) -> TypeError:
        """The one-line error for knobs this method does not have, with the valid ones and where the others live."""
        owners = []
        for k in unknown:
            where = [s.name for s in REGISTRY.values() if k in s.knob_names]
            if where:
                owners.append(f"{k!r} is a knob of sampler=" + ", ".join(map(repr, where)))
        valid = ", ".join(f"{k.name} ({k.type_name})" for k in self.knobs) or "none"
        hint = f"; {'; '.join(owners)}" if owners else ""
        return TypeError(
            f"{self.name}_sample got unknown option(s) {', '.join(map(repr, unknown))}; it accepts {valid}{hint}"
        )

    def steps_for(
        self,
        nfe: int,
        knobs: Mapping[str, Any] | None = None,
        *,
        end_zero: bool = True,
        start_inf: bool = False,
        afs: object = None,
    ) -> int:
        """The most steps N whose run costs at most ``nfe`` network evaluations (0 if even one step costs more);
        ``start_inf``: for a schedule starting at sigma = inf.

        With ``afs`` on (:mod:`edm_samplers.afs`) the first evaluation is the closed form and costs nothing.
        """
        values = self.resolve(knobs or {})
        rule = self.nfe_inf if start_inf and self.nfe_inf is not None else self.nfe
        free = int(afs_enabled(afs))
        n = 0
        while rule(n + 1, end_zero, values) - free <= nfe:
            n += 1
        return n

    def count(self, sigmas: Tensor | Sequence[float], knobs: Mapping[str, Any] | None = None, *,
              afs: object = None) -> int:  # fmt: skip
        """Network evaluations of one run on ``sigmas`` with ``knobs`` (one fewer with ``afs`` on)."""
        check_has_data(sigmas, "sigmas")
        s = check_sigmas(sigmas, allow_inf_first=True)
        rule = self.nfe_inf if self.nfe_inf is not None and math.isinf(float(s[0])) else self.nfe
        return rule(s.numel() - 1, bool(s[-1] == 0), self.resolve(knobs or {})) - int(afs_enabled(afs))


REGISTRY: dict[str, SolverSpec] = {}
"""Registry name -> :class:`SolverSpec`, in registration order (the built-ins first)."""


def register(spec: SolverSpec, *, replace: bool = False) -> SolverSpec:
    """Add ``spec`` to the registry (every consumer then knows it); ``replace`` an existing name explicitly."""
    if not isinstance(spec, SolverSpec):
        raise TypeError(f"spec must be a SolverSpec, got {type(spec).__name__}")
    if not spec.name.isidentifier():
        raise ValueError(f"a solver's name must be an identifier (it names <name>_sample), got {spec.name!r}")
    if spec.name in REGISTRY and not replace:
        raise ValueError(f"sampler {spec.name!r} is already registered; pass replace=True to redefine it")
    REGISTRY[spec.name] = spec
    TABLES.clear()  # programs are cached by name: a redefinition must not meet the old ones
    return spec


def names() -> tuple[str, ...]:
    """The registered samplers' names."""
    return tuple(REGISTRY)


def get(sampler: str) -> SolverSpec:
    """The entry of ``sampler``; a ``ValueError`` listing the names otherwise."""
    spec = REGISTRY.get(sampler) if isinstance(sampler, str) else None
    if spec is None:
        hint = ""
        if isinstance(sampler, str) and sampler.removesuffix("_sample") in REGISTRY:
            hint = f"; did you mean {sampler.removesuffix('_sample')!r} (the registry name of {sampler})?"
        raise ValueError(f"sampler must be one of {', '.join(map(repr, REGISTRY))}, got {sampler!r}{hint}")
    return spec


def count_nfe(sigmas: Tensor | Sequence[float], sampler: str, *, afs: object = None, **knobs: Any) -> int:
    """Network evaluations of one run of ``sampler`` (a registry name) on ``sigmas`` with ``knobs``.

    For example ``count_nfe(karras_sigmas(18), "heun") == 35`` (the step to 0 is Euler),
    ``count_nfe(s, "stochastic", solver="euler") == len(s) - 1``, and with the analytical first step
    (``afs=``, see :mod:`edm_samplers.afs`) one fewer: ``count_nfe(karras_sigmas(18), "heun", afs=0.5) == 34``.
    Raises ``ValueError`` for an unknown sampler and ``TypeError`` / ``ValueError`` for invalid knobs, like the
    sampler itself would.
    """
    return get(sampler).count(sigmas, knobs, afs=afs)


def label(sampler: str, knobs: Mapping[str, Any] | None = None, *, full: bool = False) -> str:
    """``"unipc:order=3"``: a sampler and knobs as text (:func:`parse_label` reads it back).

    With ``full``, every knob is written (defaults resolved; callables cannot be): the key under which a
    result tuned for exactly that configuration is stored, so that a later change of a default does not
    silently make it answer for another configuration.
    """
    spec = get(sampler)
    values = spec.resolve(knobs or {})
    shown = [k for k in spec.knobs if (full or k.name in (knobs or {})) and values[k.name] is not None]
    for k in shown:
        if callable(values[k.name]):
            raise TypeError(f"knob {k.name} holds a callable, which has no text form")
    text = ",".join(f"{k.name}={k.format(values[k.name])}" for k in shown)
    return f"{spec.name}:{text}" if text else spec.name


def parse_label(text: str) -> tuple[str, dict[str, Any]]:
    """``"unipc:order=3,order_rule=full"`` -> ``("unipc", {"order": 3, "order_rule": "full"})``."""
    name, _, rest = text.partition(":")
    spec = get(name.strip())
    return spec.name, parse_knobs(spec.name, [p for p in rest.split(",") if p.strip()])


def parse_knobs(sampler: str, items: Sequence[str]) -> dict[str, Any]:
    """``["order=3", "eta=0.5"]`` parsed by each knob's declared type; one-line errors listing the valid knobs."""
    spec = get(sampler)
    out: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"knobs are written key=value, got {item!r}")
        out[key.strip()] = spec.knob(key.strip()).parse(value)
    spec.resolve(out)  # cross-knob checks
    return out


# ---- the built-in solvers --------------------------------------------------------------------------------


def _churn_range(k: dict[str, Any]) -> None:
    if k["s_tmin"] > k["s_tmax"]:
        raise ValueError(f"s_tmin must be <= s_tmax, got s_tmin={k['s_tmin']}, s_tmax={k['s_tmax']}")


ORDER_RULE = Knob(
    "order_rule", "str", "auto",
    "which order each step takes: 'full' (nominal order after the warm-up), 'final' (at most the steps left, "
    f"diffusers' lower_order_final) or 'auto' (data-prediction solvers: order 1 on steps landing on sigma <= "
    f"{LOW_ORDER_SIGMA}, which assumes data in about [-1, 1] (sigma_data ~ 0.5), order <= 2 with the 2M weights "
    f"where ln(sigma_i / sigma_i+1) > {MAX_LOG_STEP}; derivative solvers: 'final')",
    choices=("auto", "full", "final"),
)  # fmt: skip
ETA = Knob("eta", "float", 1.0, "noise fraction (1: the reverse SDE, 0: the ODE)", low=0.0)
S_NOISE = Knob("s_noise", "float", 1.0, "noise inflation S_noise", low=0.0)
CHURN = (
    Knob("s_churn", "float", 0.0, "overall stochasticity S_churn (EDM ImageNet-64: 40)", low=0.0),
    Knob("s_tmin", "float", 0.0, "lowest sigma that gets churn, S_tmin", low=0.0),
    Knob("s_tmax", "float", float("inf"), "highest sigma that gets churn, S_tmax", low=0.0, allow_inf=True),
    Knob("s_noise", "float", 1.0, "noise inflation S_noise (EDM: 1.003)", low=0.0),
    Knob("solver", "str", "heun", "the inner ODE step from sigma_hat to sigma_next", choices=("heun", "euler")),
    Knob("round_sigma", "callable", None, "maps sigma_hat onto levels a discrete model supports"),
)


FORM = Knob(
    "form", "str", "noise", "noise (DPM-Solver-2) or data (DPM-Solver++(2S)) prediction", choices=("noise", "data")
)


def _order(default: int, high: int) -> Knob:
    return Knob("order", "int", default, "the solver's order (the first steps warm up from 1)", low=1, high=high)


def _linear(name: str, summary: str, order: int, knobs: tuple[Knob, ...], stochastic: bool = False) -> SolverSpec:
    return SolverSpec(name, summary, order, one_per_step, stochastic, knobs, build_linear(name), strict=True)


_GENERALIZED_KNOBS = (
    Knob("schedule", "str", "edm", "sigma(t) of the ODE (EDM Table 1)", choices=("edm", "linear", "vp", "ve")),
    Knob("scaling", "str", "none", "s(t) of the ODE: 1 or 1/sqrt(1 + sigma^2)", choices=("none", "vp")),
    Knob("solver", "str", "heun", "2nd-order rule with parameter alpha, or Euler", choices=("heun", "euler")),
    Knob("alpha", "float", 1.0, "the 2nd-order rule's evaluation point (1: Heun, 0.5: midpoint)", 0, 1, True),
    *CHURN[:4],
    CHURN[5],
    Knob("beta_d", "float", 19.9, "beta_d of the VP sigma(t)", low=0.0, open_low=True),
    Knob("beta_min", "float", 0.1, "beta_min of the VP sigma(t)", low=0.0),
)

for _spec in (
    SolverSpec("euler", "Euler (1st order)", 1, one_per_step, False, (), build_edm("euler", stochastic=False)),
    SolverSpec("heun", "Heun, EDM Algorithm 1 (2nd order)", 2, two_per_step, False, (),
               build_edm("heun", stochastic=False), nfe_inf=euler_first(two_per_step)),
    SolverSpec(
        name="stochastic", summary="EDM Algorithm 2: churn, then a Heun or Euler step", order=2, nfe=by_solver_knob,
        stochastic=True, knobs=CHURN, build=build_edm(None, stochastic=True), check=_churn_range,
        nfe_inf=euler_first(by_solver_knob),
    ),
    SolverSpec(
        name="generalized", summary="EDM's generalized sampler: any sigma(t), s(t), alpha, churn", order=2,
        nfe=by_solver_knob, stochastic=True, knobs=_GENERALIZED_KNOBS, build=build_generalized, check=_churn_range,
        nfe_inf=euler_first(by_solver_knob),
    ),
    _linear("dpmpp_2m", "DPM-Solver++(2M)", 2, (ORDER_RULE,)),
    _linear("dpmpp_3m", "multistep DPM-Solver++, exact integrals (order 1..4)", 3, (_order(3, 4), ORDER_RULE)),
    _linear("dpmpp_2m_sde", "DPM-Solver++(2M) SDE", 1, (ETA, S_NOISE, ORDER_RULE), stochastic=True),
    _linear("dpmpp_3m_sde", "DPM-Solver++(3M) SDE", 1, (ETA, S_NOISE, ORDER_RULE), stochastic=True),
    _linear("deis", "DEIS tAB in log sigma (order 1..3)", 3, (_order(3, 3), ORDER_RULE)),
    _linear("lms", "linear multistep in sigma (order 1..4)", 4, (_order(4, 4), ORDER_RULE)),
    _linear("ipndm", "iPNDM: equal-step Adams-Bashforth (order 1..4)", 4, (_order(4, 4), ORDER_RULE)),
    _linear("unipc", "UniPC-bh2 predictor-corrector (order 1..3)", 3, (_order(3, 3), ORDER_RULE)),
    _linear("euler_ancestral", "Euler ancestral", 1, (ETA, S_NOISE), stochastic=True),
    SolverSpec("dpm2", "DPM-Solver-2 / DPM-Solver++(2S), single step", 2, two_per_step, False, (FORM,), build_dpm2,
               strict=True, nfe_inf=euler_first(two_per_step)),
):  # fmt: skip
    register(_spec)

# CFG++ (solvers/cfgpp.py): they take a guided denoiser, so consumers running plain denoisers skip them.
register(SolverSpec("euler_cfgpp", "Euler / DDIM with CFG++ (a guided denoiser)", 1, one_per_step, False, (),
                    build_cfgpp("euler"), strict=True, guided=True))  # fmt: skip
register(SolverSpec("dpmpp_2m_cfgpp", "DPM-Solver++(2M) with CFG++ (a guided denoiser)", 2, one_per_step, False,
                    (ORDER_RULE,), build_cfgpp("dpmpp_2m"), strict=True, guided=True))  # fmt: skip
