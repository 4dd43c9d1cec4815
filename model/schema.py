"""One schema for every config: a field says its type, its bounds, its choices and its help, once.

A config dataclass declares each field with ``setting(...)`` instead of a bare default::

    @dataclass
    class TrainConfig:
        lr: float = setting(1e-3, "peak learning rate", gt=0, lt=1)
        loss: str = setting("cosine", "next-concept loss", choices=LOSSES)

``check(obj)`` validates an instance against its fields (a ``ValueError`` names the field and the
rule); ``specs(cls)`` gives the ``Spec`` of each field, which the CLI help and the workbench's forms
are built from, so a bound or a choice changes in one place and everything follows.

For a form: ``Spec.kind`` says which widget fits ("choice", "bool", "int", "float", "str",
"mapping"), ``Spec.group`` where it goes, ``Spec.default``/``choices``/bounds what it allows and
``Spec.help`` its tooltip; ``groups(cls)`` lists the fields group by group.

Choices may be a callable returning the allowed values, read each time a ``Spec`` is made, for lists
that grow at run time (the scan backends a GPU package registers).
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import MISSING, dataclass
from enum import Enum
from typing import Any, Callable

_META = "vmmoe"


@dataclass(frozen=True)
class Spec:
    """What one config field accepts.

    ``type`` is the Python type of the value (``int``, ``float``, ``str``, ``bool``, ``dict``; an
    ``Enum`` subclass for enumerated fields, whose values are what files and forms hold).
    ``choices`` lists the allowed values (plain values, not enum members); ``ge``/``gt``/``le``/``lt``
    bound numbers; ``optional`` lets ``None`` through; ``allowed_chars`` are the characters a
    string may hold besides letters and digits (``None``: any).
    """

    name: str
    type: type
    default: Any
    help: str
    choices: tuple | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    optional: bool = False
    allowed_chars: str | None = None
    group: str = ""
    also: tuple = ()              # values accepted besides the type's (dt_rank's "auto")
    choice_key: Callable[[Any], Any] | None = None  # the part of a value the choices name ("cuda:1" -> "cuda")

    @property
    def kind(self) -> str:
        """The widget a form needs: "choice", "bool", "int", "float", "str" or "mapping"."""
        if self.choices is not None:
            return "choice"
        return {bool: "bool", int: "int", float: "float", str: "str", dict: "mapping"}.get(self.type, "str")

    def bounds_text(self) -> str:
        parts = []
        if self.ge is not None:
            parts.append(f">= {self.ge:g}")
        if self.gt is not None:
            parts.append(f"> {self.gt:g}")
        if self.le is not None:
            parts.append(f"<= {self.le:g}")
        if self.lt is not None:
            parts.append(f"< {self.lt:g}")
        return " and ".join(parts)

    def describe(self) -> str:
        """One line for ``--help``: the help text, the choices or bounds, the default."""
        extra = []
        if self.choices is not None:
            extra.append("one of " + ", ".join(map(str, self.choices)))
        elif self.bounds_text():
            extra.append(self.bounds_text() + "".join(f" or {a!r}" for a in self.also))
        extra.append(f"default {_plain(self.default)!r}")
        return f"{self.help} ({'; '.join(extra)})"

    def check(self, value, owner: str = "config") -> Any:
        """The value, coerced (int -> float, enum member -> its value); else a ValueError naming the field."""
        where = f"{owner} {self.name}={value!r}"
        if value is None and self.optional:
            return None
        if any(value == a and type(value) is type(a) for a in self.also):
            return value
        kind = str if isinstance(self.type, type) and issubclass(self.type, Enum) else self.type
        if isinstance(value, Enum):
            value = value.value
        # bool is an int subclass: True as a step count is a mistake, not a 1
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (kind is bool) != isinstance(value, bool) or not isinstance(value, kind):
            raise ValueError(f"{where}: expected {kind.__name__}, got {type(value).__name__}")
        if kind is float and not math.isfinite(value):
            raise ValueError(f"{where}: must be finite")
        key = self.choice_key(value) if self.choice_key is not None else value
        if self.choices is not None and key not in self.choices:
            raise ValueError(f"{where}: must be one of {', '.join(map(str, self.choices))}")
        for bound, ok in ((self.ge, lambda b: value >= b), (self.gt, lambda b: value > b),
                          (self.le, lambda b: value <= b), (self.lt, lambda b: value < b)):
            if bound is not None and not ok(bound):
                raise ValueError(f"{where}: must be {self.bounds_text()}")
        if self.allowed_chars is not None and any(c not in self.allowed_chars and not c.isalnum() for c in value):
            raise ValueError(f"{where}: may hold only letters, digits and {' '.join(repr(c) for c in self.allowed_chars)}")
        return value


def setting(default, help: str, *, choices=None, ge=None, gt=None, le=None, lt=None, optional: bool = False,
            allowed_chars: str | None = None, group: str = "", factory=None, also: tuple = (),
            choice_key: Callable[[Any], Any] | None = None) -> Any:
    """A dataclass field that carries its own rules (see the module docstring).

    ``choices``: a sequence, an ``Enum`` class (its values) or a callable returning a sequence.
    ``also``: values accepted besides the field's type. ``choice_key``: maps a value to what the
    choices list (a device "cuda:1" is the choice "cuda").
    """
    if isinstance(choices, type) and issubclass(choices, Enum):
        choices = tuple(m.value for m in choices)
    elif choices is not None and not callable(choices):
        choices = tuple(choices)
    meta = {_META: dict(help=help, choices=choices, ge=ge, gt=gt, le=le, lt=lt, optional=optional,
                        allowed_chars=allowed_chars, group=group, also=tuple(also), choice_key=choice_key)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _field_type(cls, f: dataclasses.Field) -> type:
    """The field's value type from its annotation: ``X | None`` is X; ``int | str`` is int (the first),
    the other values being listed in ``also``."""
    hint = typing.get_type_hints(cls)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and args:
        hint = args[0]
    return typing.get_origin(hint) or hint


def specs(cls) -> list[Spec]:
    """The ``Spec`` of every field of a config class declared with ``setting``, in declaration order."""
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get(_META)
        if meta is None:
            continue
        default = f.default if f.default is not MISSING else f.default_factory()
        choices = meta["choices"]
        if callable(choices):
            choices = tuple(choices())
        out.append(Spec(name=f.name, type=_field_type(cls, f), default=default, **{**meta, "choices": choices}))
    return out


def groups(cls) -> dict[str, list[Spec]]:
    """The specs of ``cls`` by group, groups and fields in declaration order (what a form lays out)."""
    out: dict[str, list[Spec]] = {}
    for s in specs(cls):
        out.setdefault(s.group, []).append(s)
    return out


def spec(cls, name: str) -> Spec:
    for s in specs(cls):
        if s.name == name:
            return s
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def check(obj, owner: str | None = None) -> None:
    """Validate (and coerce in place) every ``setting`` field of a config instance."""
    owner = owner or type(obj).__name__
    for s in specs(type(obj)):
        object.__setattr__(obj, s.name, s.check(getattr(obj, s.name), owner))


def from_mapping(cls, d: dict, owner: str | None = None):
    """``cls(**d)`` with unknown keys refused by name (a typo is an error, not a silently ignored setting)."""
    owner = owner or cls.__name__
    if not isinstance(d, dict):
        raise ValueError(f"{owner} must be a mapping (a dict), got {type(d).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {owner} key(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return cls(**d)


def _plain(value):
    return value.value if isinstance(value, Enum) else value
