"""Where methods come from: the shipped ones, the `dynbench.methods` entry-point group, and
`--method package.module:Name` for a method in a local module.

A plug-in package declares, in its pyproject.toml,

    [project.entry-points."dynbench.methods"]
    pdrop = "dynbench_pdrop:PDrop"

and `pip install` makes it visible. Every entry point is loaded once, lazily, the first time a
method name is needed (a flag, a spec, `dynbench methods`). A plug-in that fails to import, or
is not a `Method`, or reuses a taken name, becomes an `Entry` with an `error`: it is listed with
that error and refused in one line when used; `--help` and the other methods are unaffected.
"""

from __future__ import annotations

import functools
import importlib
import re
from dataclasses import dataclass
from importlib.metadata import entry_points

from dynbench.errors import DynbenchError
from dynbench.method_api import Method

GROUP = "dynbench.methods"
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")  # a method's name: a column value, part of file names


class MethodError(DynbenchError):
    """An unknown method, or a plug-in that cannot be used; the message is one line."""


@dataclass(frozen=True)
class Entry:
    name: str
    origin: str  # "dynbench (shipped)", "entry point pdrop = dynbench_pdrop:PDrop (dynbench-pdrop 0.1.0)"
    method: Method | None
    error: str | None = None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text[:200]}"


def _as_method(obj, name: str | None) -> Method:
    """A `Method` subclass or instance → the instance (its name `name` unless None); anything else
    refused."""
    if isinstance(obj, type) and issubclass(obj, Method):
        obj = obj()
    if not isinstance(obj, Method):
        raise TypeError(f"{obj!r} is not a dynbench.method_api.Method")
    if not NAME.fullmatch(obj.name):
        raise ValueError(f"its Method.name {obj.name!r} must be 1-40 of a-z 0-9 _ - (a lowercase letter or digit "
                         "first)")
    if name is not None and obj.name != name:
        raise ValueError(f"its Method.name is {obj.name!r}, not {name!r}")
    obj.option_values({})  # its defaults must parse
    from dynbench.records import SPEC_COLUMNS

    taken = [obj.field(o) for o in obj.options if o.field is None and obj.field(o) in SPEC_COLUMNS]
    if taken:
        raise ValueError(f"option field(s) {', '.join(taken)} clash with dynbench's own; rename the options")
    return obj


def _shipped() -> list[Entry]:
    from dynbench.models.methods import SHIPPED

    return [Entry(m.name, "dynbench (shipped)", m) for m in SHIPPED]


def _plugins(taken: set[str]) -> list[Entry]:
    found = []
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        dist = getattr(ep, "dist", None)
        origin = f"entry point {ep.name} = {ep.value}" + (f" ({dist.name} {dist.version})" if dist else "")
        if ep.name in taken:
            found.append(Entry(ep.name, origin, None, f"the name {ep.name!r} is taken by another method"))
            continue
        try:
            found.append(Entry(ep.name, origin, _as_method(ep.load(), ep.name)))
        except Exception as exc:  # a plug-in's failure is its own: reported, never raised here
            found.append(Entry(ep.name, origin, None, _short(exc)))
        taken.add(ep.name)
    return found


@functools.cache
def listing() -> tuple[Entry, ...]:
    """Every method found, in order: the shipped ones (`names.METHODS` order), then the plug-ins —
    a plug-in reusing a taken name too, as an entry with its error (it never replaces the first)."""
    shipped = _shipped()
    return (*shipped, *_plugins({e.name for e in shipped}))


def installed() -> dict[str, Entry]:
    """Every method by name (the first of a name wins; broken plug-ins included, with their error)."""
    entries: dict[str, Entry] = {}
    for entry in listing():
        entries.setdefault(entry.name, entry)
    return entries


def names() -> tuple[str, ...]:
    """The names of the methods that can be used (broken plug-ins left out)."""
    return tuple(name for name, e in installed().items() if e.error is None)


@functools.cache
def _from_module(spec: str) -> Method:
    module, _, attr = spec.partition(":")
    try:
        return _as_method(getattr(importlib.import_module(module), attr), None)
    except Exception as exc:
        raise MethodError(f"method {spec}: {_short(exc)}") from None


def get(name: str) -> Method:
    """The method of a `--method` value: an installed name, or `package.module:Name`."""
    if ":" in name:
        return _from_module(name)
    entry = installed().get(name)
    if entry is None:
        raise MethodError(f"unknown method {name!r}; choose one of: {', '.join(names())} "
                          "(or package.module:Name; `dynbench methods` lists what is installed)")
    if entry.error is not None:
        raise MethodError(f"method plug-in {name!r} ({entry.origin}) cannot be used: {entry.error}")
    return entry.method


def option_fields(methods: list[str] | None = None) -> dict[str, tuple[Method, object]]:
    """Suite key / flag field → (method, option) of every plug-in option (installed methods, plus
    any `package.module:Name` in `methods`). The shipped methods' options keep their own fields."""
    fields = {}
    extra = [get(m) for m in methods or () if isinstance(m, str) and ":" in m]
    for method in [installed()[n].method for n in names()] + extra:
        for option in method.options:
            if option.field is None:
                fields[method.field(option)] = (method, option)
    return fields
