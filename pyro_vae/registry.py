"""Named registries of components, and the validation of their parameters.

An entry is a class whose keyword parameters carry type annotations and defaults, a subclass of
its registry's base (:mod:`pyro_vae.entries`): a frozen dataclass of parameters. An estimator
named from outside may instead be a ``pyro.infer.ELBO`` subclass, the registry's ``foreign``
base. ``Registry.parse({"name": ..., **params}, path)`` checks the name, the keys and the
types against that signature, then calls the entry once so that its own range checks
(``ValueError``) run; every failure is a one-line :class:`SpecError` naming the dotted key.
This module and the registries (:mod:`pyro_vae.components`, :mod:`pyro_vae.data`) import
neither torch nor Pyro: a spec is validated before either is imported.

A name is one of three things, looked up in this order:

* a built-in entry (``@PRIORS.register("vamp")``);
* ``"package.module:Class"``, an entry in the user's own importable module, the
  ``module:attribute`` notation of Python's entry points (and of uvicorn, gunicorn, ...): the
  spec, and so the run's ``config.yaml``, names it, and every later command imports it again;
* the name of an installed entry point in the group ``pyro_vae.<kind>`` (``pyro_vae.prior``,
  ``pyro_vae.likelihood``, ``pyro_vae.network``, ``pyro_vae.estimator``, ``pyro_vae.data``),
  for components that a package ships.

A spec is data, and a run directory may come from anyone: what a name resolves to must be a
class that subclasses the registry's base (or its foreign base), checked after the import and
before anything is called, so that ``os:system`` or ``subprocess:Popen`` is refused (a :class:`SpecError`) instead
of run. Importing the module still runs its top-level code: naming a module is trusting it.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
import inspect
import math
import operator
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, Literal, TypeVar, Union

from pyro_vae.entries import kind_name

T = TypeVar("T")
#: Integer parameters fit a signed 64-bit integer (torch's and numpy's default integers).
INT_LIMIT = 2**63
#: Every parameter named ``seed`` seeds numpy's and Lightning's generators: 0 <= seed < 2³².
SEED_LIMIT = 2**32
MESSAGE_CHARS = 2000  # a SpecError line is cut to this many characters (its key to a tenth)


def clip(text: str, limit: int = 80) -> str:
    """``text`` itself, or its first ``limit`` characters and how many there were."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def printable(text: str) -> str:
    """``text`` with each character that does not print (a newline, a tab, a control
    character) written as its escape, ``\\n``: a key a YAML file spells with a line break stays
    on the error's one line. ``"lätent"`` stays as it is."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def shown(value: Any) -> str:
    """``repr(value)`` for an error message, clipped (:func:`clip`): a 100 KB ``--set`` value is
    named, not echoed. A long integer gives its number of digits (``repr`` of one over 4300
    digits raises)."""
    if isinstance(value, int) and abs(value) >= 10**20:
        digits = round(value.bit_length() * math.log10(2))
        return f"{'-' if value < 0 else ''}an integer of about {digits} digits"
    return clip(repr(value))


class SpecError(ValueError):
    """A user error in a spec or its inputs: printed as one line, exit code 2."""

    def __init__(self, key: str, message: str) -> None:
        self.key = clip(printable(key), MESSAGE_CHARS // 10)
        self.message = clip(" ".join(str(message).split()), MESSAGE_CHARS)  # always one line
        super().__init__(f"{self.key}: {self.message}" if key else self.message)


def directory_argument(text: str) -> str:
    """An argparse ``type`` for a directory option: an empty string is an error, not the
    default (``--out ''`` would otherwise mean ``runs/<config name>``)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "empty; give a directory, or leave the option out for the default"
        )
    return text


def did_you_mean(value: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(str(value), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def choices_text(choices: typing.Iterable[str]) -> str:
    return ", ".join(sorted(choices))


@dataclass(frozen=True)
class Component:
    """A validated registry choice: ``name`` plus its parameters (defaults filled in)."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **{k: _plain(v) for k, v in self.params.items()}}

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted((k, repr(v)) for k, v in self.params.items()))))


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def signature_params(entry: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """Keyword parameters of ``entry`` with their annotations resolved."""
    target = entry.__init__ if inspect.isclass(entry) else entry  # type: ignore[misc]
    hints = typing.get_type_hints(target)
    params = inspect.signature(entry).parameters.values()
    return {
        p.name: p.replace(annotation=hints.get(p.name, Any))
        for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def parameters_text(entry: Callable[..., Any]) -> str:
    """``key=default, key (required)``: the parameters of ``entry`` as ``pyro-vae datasets``
    lists them."""
    return ", ".join(
        f"{k} (required)" if p.default is inspect.Parameter.empty else f"{k}={p.default!r}"
        for k, p in signature_params(entry).items()
    )


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a type annotation, converting where the conversion is exact."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, key)
            except SpecError as exc:
                errors.append(exc.message)
        raise SpecError(key, " or ".join(dict.fromkeys(errors)))  # each reason once
    if origin is Literal:
        if value in args:
            return value
        raise SpecError(
            key,
            f"{shown(value)} is not one of: {', '.join(map(str, args))}"
            + did_you_mean(value, map(str, args)),
        )
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            value = (
                [value]
                if isinstance(value, (int, float)) and not isinstance(value, bool)
                else value
            )
        if not isinstance(value, (list, tuple)):
            raise SpecError(key, f"expected a list, got {shown(value)}")
        item = args[0] if args else Any
        return tuple(coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise SpecError(key, f"expected true or false, got {shown(value)}")
    if annotation is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise SpecError(key, f"expected an integer, got {shown(value)}")
        if not -INT_LIMIT <= value < INT_LIMIT:
            raise SpecError(key, f"{shown(value)} is out of range: integers lie in [-2**63, 2**63)")
        return value
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, int) and abs(value) >= INT_LIMIT:  # float() of 10**400 raises
                raise SpecError(key, f"{shown(value)} is out of range")
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise SpecError(key, f"expected a number, got {shown(value)}")
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise SpecError(key, f"expected a string, got {shown(value)}")
    return value


def parse_kwargs(entry: Callable[..., Any], values: Mapping[str, Any], key: str) -> dict[str, Any]:
    """Validate ``values`` against ``entry``'s annotated keyword parameters; fill defaults."""
    params = signature_params(entry)
    unknown = [k for k in values if k not in params]
    if unknown:
        k = unknown[0]
        raise SpecError(
            f"{key}.{k}" if key else k,
            f"unknown key; valid keys: {choices_text(params)}" + did_you_mean(k, params),
        )
    out: dict[str, Any] = {}
    for name, p in params.items():
        sub = f"{key}.{name}" if key else name
        if name in values:
            out[name] = coerce(values[name], p.annotation, sub)
            if name == "seed" and isinstance(out[name], int) and not 0 <= out[name] < SEED_LIMIT:
                raise SpecError(sub, f"{shown(out[name])} is out of range: seeds lie in [0, 2**32)")
        elif p.default is inspect.Parameter.empty:
            raise SpecError(sub, "missing required key")
        else:
            out[name] = _plain_default(p.default)
    return out


def _plain_default(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


class Registry(Generic[T]):
    """Name → entry, every entry a subclass of ``base``. ``register`` is a decorator; ``parse``
    validates a ``{name, ...}`` mapping. ``foreign``: ``"module:Class"`` of a second base that
    an entry named from outside (``module:Class``, an entry point) may subclass instead, its
    class then made directly from the parameters; its module is imported only to check such an
    entry (``pyro.infer:ELBO`` for estimators)."""

    def __init__(self, kind: str, base: type[T], foreign: str | None = None) -> None:
        self.kind = kind
        self.base = base
        self.foreign = foreign
        self.entries: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def add(entry: Callable[..., T]) -> Callable[..., T]:
            if name in self.entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            if not (inspect.isclass(entry) and issubclass(entry, self.base)):
                raise TypeError(
                    f"{self.kind} {name!r}: {entry!r} does not subclass {kind_name(self.base)}"
                )
            self.entries[name] = entry
            return entry

        return add

    @property
    def group(self) -> str:
        """The entry-point group whose entries extend this registry."""
        return f"pyro_vae.{self.kind}"

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def __getitem__(self, name: str) -> Callable[..., T]:
        return self.entry(name, f"{self.kind}.name")

    def entry(self, name: Any, key: str) -> Callable[..., T]:
        """The entry called ``name`` (module docstring); a SpecError naming ``key`` otherwise."""
        if isinstance(name, str) and name in self.entries:
            return self.entries[name]
        if isinstance(name, str) and ":" in name:
            return self._checked(import_entry(name, key), name, key)
        plugins = self.plugins()
        if isinstance(name, str) and name in plugins:
            return self._checked(_load(plugins[name], key), name, key)
        choices = [*self.entries, *plugins]
        raise SpecError(
            key,
            f"unknown {self.kind} {shown(name)}; choices: "
            f"{choices_text(choices)}"
            + did_you_mean(str(name), choices)
            + "; or 'package.module:Class' from your own module",
        )

    def _base_of(self, entry: Any, key: str) -> type | None:
        """The base that ``entry`` subclasses: :attr:`base`, else the :attr:`foreign` one (its
        module imported here); None when ``entry`` is no such class."""
        if not inspect.isclass(entry):
            return None
        if issubclass(entry, self.base):
            return self.base
        foreign = import_entry(self.foreign, key) if self.foreign else None
        return foreign if foreign is not None and issubclass(entry, foreign) else None

    def _checked(self, entry: Any, name: str, key: str) -> Callable[..., T]:
        """``entry`` when it is a concrete subclass of the base (or the foreign base) whose
        parameters can be read; nothing of it is called."""
        if self._base_of(entry, key) is None:
            what = (
                f"the class {entry.__qualname__}"
                if inspect.isclass(entry)
                else f"a {type(entry).__name__}"
            )
            bases = kind_name(self.base) + (
                f" or of {self.foreign.replace(':', '.')}" if self.foreign else ""
            )
            raise SpecError(
                key,
                f"{name!r} is {what}, not a {self.kind} class: a {self.kind} "
                f'is a subclass of {bases} (README, "Write your own component")',
            )
        if inspect.isabstract(entry):
            missing = ", ".join(sorted(getattr(entry, "__abstractmethods__", ())))
            raise SpecError(key, f"{name!r} does not implement {missing}")
        try:
            signature_params(entry)
        except (TypeError, ValueError, NameError) as exc:
            raise SpecError(key, f"cannot read the parameters of {name!r}: {exc}") from None
        return entry

    def names(self) -> list[str]:
        """Built-in entries and installed entry points."""
        return sorted({*self.entries, *self.plugins()})

    def plugins(self) -> dict[str, EntryPoint]:
        """The installed entry points of :attr:`group`, by name."""
        return {ep.name: ep for ep in entry_points(group=self.group)}

    def parse(self, value: Any, key: str | None = None) -> Component:
        key = key or self.kind
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, Mapping):
            raise SpecError(key, f"expected a mapping with a 'name' key, got {shown(value)}")
        if "name" not in value:
            raise SpecError(f"{key}.name", f"missing; choices: {choices_text(self.names())}")
        name = value["name"]
        entry = self.entry(name, f"{key}.name")
        params = parse_kwargs(entry, {k: v for k, v in value.items() if k != "name"}, key)
        component = Component(name, params)
        self.instantiate(component, key)  # runs the entry's own range checks
        return component

    def instantiate(self, component: Component, key: str | None = None) -> T:
        """The entry made from the component's parameters (for a foreign entry, an instance of
        the foreign base); its ``ValueError`` is a SpecError naming ``key``."""
        name_key = f"{key or self.kind}.name"
        entry = self.entry(component.name, name_key)
        try:
            made = entry(**component.params)
        except SpecError:
            raise
        except ValueError as exc:
            raise SpecError(key or self.kind, str(exc)) from None
        return built(made, self._base_of(entry, name_key) or self.base, name_key, component.name)


def built(value: Any, kind: type[T] | tuple[type, ...], key: str, name: str) -> T:
    """``value`` when it is an instance of ``kind``: what a component's class or method returned,
    checked before it is used; a SpecError naming ``key`` otherwise."""
    if isinstance(value, kind):
        return value
    kinds = kind if isinstance(kind, tuple) else (kind,)
    raise SpecError(
        key,
        f"{name!r} returned a {type(value).__module__}.{type(value).__qualname__}"
        f", not a {' or '.join(kind_name(k) for k in kinds)}",
    )


def import_entry(name: str, key: str) -> Any:
    """``"package.module:Attribute"`` → that attribute, imported; a SpecError naming ``key``
    when the module cannot be imported or lacks it. The caller checks what it is
    (:meth:`Registry._checked`) before calling it."""
    module_name, _, attribute = name.partition(":")
    if not module_name or not attribute:
        raise SpecError(key, f"{name!r} is not of the form 'package.module:Attribute'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise SpecError(
            key,
            f"cannot import module {module_name!r} for {name!r} ("
            f"{type(exc).__name__}: {exc}); put its folder on PYTHONPATH or install "
            "its package",
        ) from None
    try:
        entry = operator.attrgetter(attribute)(module)
    except AttributeError:
        raise SpecError(key, f"module {module_name!r} has no attribute {attribute!r}") from None
    return entry


def _load(entry_point: EntryPoint, key: str) -> Any:
    try:
        return entry_point.load()
    except Exception as exc:
        raise SpecError(
            key,
            f"cannot load entry point {entry_point.name!r} = "
            f"{entry_point.value!r} ({type(exc).__name__}: {exc})",
        ) from None


def frozen_params(cls: type[T]) -> type[T]:
    """Decorator: a frozen, keyword-only dataclass of component parameters."""
    return dataclasses.dataclass(frozen=True, kw_only=True)(cls)
