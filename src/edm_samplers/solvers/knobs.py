"""Typed knobs: the method-specific options of a solver, declared once in its registry entry.

A :class:`Knob` knows its type, default, valid range or choices and a one-line doc. From that one
declaration come the checks at every entry point (``TypeError`` / ``ValueError`` naming the knob, the
value and the valid range), the parsing of ``key=value`` text (the command line's ``--opt order=3``, the
tuned-schedule keys ``"unipc:order=3"``) and the ``Args:`` lines of the public samplers' docstrings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from .._validate import check_float, check_int

__all__ = ["Knob", "KnobType", "knob_values"]

KnobType = Literal["int", "float", "bool", "str", "callable"]
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


@dataclass(frozen=True)
class Knob:
    """One typed option of a solver.

    Attributes:
        name: the keyword argument, e.g. ``"order"``.
        type: ``"int"``, ``"float"``, ``"bool"``, ``"str"`` (one of ``choices``) or ``"callable"`` (or None).
        default: the value used when the caller does not pass the knob.
        doc: one line for the docstrings and ``--help``.
        low, high: inclusive bounds of an int or float knob (None: unbounded).
        open_low: ``low`` is excluded (e.g. ``alpha`` in (0, 1]).
        allow_inf: a float knob may be +inf (e.g. ``s_tmax``).
        choices: the allowed strings of a ``"str"`` knob.
    """

    name: str
    type: KnobType
    default: Any
    doc: str
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    allow_inf: bool = False
    choices: tuple[str, ...] = ()

    @property
    def type_name(self) -> str:
        """The type as shown in messages: ``int``, ``float``, ``bool``, ``'heun' | 'euler'``, ``callable``."""
        return " | ".join(map(repr, self.choices)) if self.type == "str" else self.type

    def check(self, value: object) -> Any:
        """The validated value (floats as float); raises ``TypeError`` / ``ValueError`` naming the knob."""
        n = self.name
        if self.type == "bool":
            if not isinstance(value, bool):
                raise TypeError(f"{n} must be True or False, got {value!r}")
            return value
        if self.type == "str":
            if not isinstance(value, str) or value not in self.choices:
                *head, last = map(repr, self.choices)
                options = f"{', '.join(head)} or {last}" if head else last
                raise ValueError(f"{n} must be {options}, got {value!r}")
            return value
        if self.type == "callable":
            if value is not None and not callable(value):
                raise TypeError(f"{n} must be a callable ({self.doc}) or None, got {type(value).__name__}")
            return value
        if self.type == "int":
            v: float = check_int(value, n, minimum=-(2**63) if self.low is None else int(self.low))
        else:
            v = check_float(value, n, positive=self.open_low and self.low == 0, allow_inf=self.allow_inf,
                            nonnegative=self.low == 0 and not self.open_low)  # fmt: skip
        lo_bad = self.low is not None and (v <= self.low if self.open_low else v < self.low)
        if lo_bad or (self.high is not None and v > self.high):
            raise ValueError(f"{n} must be {self.range_text()}, got {v}")
        return v

    def range_text(self) -> str:
        """``"between 1 and 3"``, ``"in (0, 1]"``, ``">= 0"``, ...: the valid values in words."""
        lo, hi = self.low, self.high
        if self.type == "int" and lo is not None and hi is not None:
            return f"between {int(lo)} and {int(hi)}"
        if lo is not None and hi is not None:
            return f"in {'(' if self.open_low else '['}{_num(lo)}, {_num(hi)}]"
        if lo is not None:
            return f"{'>' if self.open_low else '>='} {_num(lo)}"
        return f"<= {_num(hi)}" if hi is not None else "any value"

    def parse(self, text: str) -> Any:
        """Parse command-line text (``"3"``, ``"0.5"``, ``"inf"``, ``"true"``, ``"data"``) and check it."""
        t = text.strip()
        try:
            if self.type == "int":
                return self.check(int(t))
            if self.type == "float":
                return self.check(float(t))
        except ValueError as e:
            if "invalid literal" not in str(e) and "could not convert" not in str(e):
                raise
            rng = "" if self.range_text() == "any value" else f" {self.range_text()}"
            raise TypeError(f"{self.name} must be {self.type}{rng}, got {t!r}") from None
        if self.type == "bool":
            if t.lower() not in _TRUE + _FALSE:
                raise TypeError(f"{self.name} must be true or false, got {t!r}")
            return t.lower() in _TRUE
        if self.type == "callable":
            raise TypeError(f"{self.name} takes a Python callable; it cannot be given as text")
        return self.check(t)

    def format(self, value: Any) -> str:
        """The text :meth:`parse` reads back to ``value`` (``true``/``false``, ``inf``, ``0.5``, ``3``)."""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            return _num(value)
        return str(value)

    def doc_line(self) -> str:
        """``order (int, 1..4, default 3): the solver's order.`` for the docstrings."""
        default = self.default.__name__ if callable(self.default) else repr(self.default)
        rng = f", {self.range_text()}" if self.type in ("int", "float") and self.range_text() != "any value" else ""
        return f"{self.name} ({self.type_name}{rng}; default {default}): {self.doc}"


def _num(v: float) -> str:
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def knob_values(knobs: tuple[Knob, ...], given: dict[str, Any]) -> dict[str, Any]:
    """Every knob's validated value: ``given`` ones checked, the others at their defaults (registry order)."""
    return {k.name: k.check(given[k.name]) if k.name in given else k.default for k in knobs}
