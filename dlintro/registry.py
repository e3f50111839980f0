"""The one registry mechanism: models, datasets, optimizers, schedules and augmentations.

A decorator registers a builder under a name; an unknown name fails with the valid names and a
did-you-mean. A registry knows the arguments that dlintro itself supplies to its builders (a
model's input shape and class count, a schedule's step counts, ...): the other parameters are
the user's, validated from the builder's own signature (pydantic), so a config value of the
wrong type or out of range fails before any TensorFlow work starts. `create` is the one way
to call a builder: it validates once and turns every refusal into one ParamsError.

Registries live in leaf modules that import no family of builders; a package's `__init__`
imports the families, which register themselves (as timm's `_registry.py`).
"""

from __future__ import annotations

import difflib
import functools
import inspect
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

import pydantic

from dlintro.errors import UserError

F = TypeVar("F", bound=Callable[..., Any])

STRICT = pydantic.ConfigDict(strict=True, arbitrary_types_allowed=True)

Problem = tuple[tuple[str | int, ...], str, Any]


def did_you_mean(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """' (did you mean X?)' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


_TYPE_TAGS = {"bool", "int", "float", "str", "none", "dict", "list", "tuple"}


def clean_loc(loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    """Drop the union-member labels pydantic puts in error locations ('literal[...]', ...)."""
    return tuple(
        p
        for p in loc
        if isinstance(p, int) or not (re.search(r"[\[\]-]", str(p)) or p in _TYPE_TAGS)
    )


def one_line(exc: Exception) -> str:
    """An exception as one line; pydantic's first error as 'param = value: message'."""
    errors = getattr(exc, "errors", None)
    if isinstance(exc, pydantic.ValidationError) and callable(errors):
        first = errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        return f"{loc} = {first.get('input')!r}: {first['msg']}"
    return " ".join(str(exc).split())


class UnknownNameError(UserError):
    """An unknown registry name; the message lists the valid names."""


class ParamsError(UserError):
    """Builder parameters failed validation, or the builder refused them; one line.

    `errors` holds (param path, message, value); the path is () when the builder itself
    raised. `detail` is the message without the "<kind> '<name>': " prefix for such refusals
    (their text names the builder already), else the message.
    """

    def __init__(self, message: str, errors: list[Problem], detail: str | None = None) -> None:
        super().__init__(message)
        self.errors = errors
        self.detail = message if detail is None else detail


def validated(fn: F) -> F:
    """Wrap a builder so that its arguments are checked against its type hints (strict)."""
    return functools.wraps(fn)(pydantic.validate_call(config=STRICT)(fn))  # type: ignore[return-value]


class Registry(Generic[F]):
    """Named builders of one kind ("model", "dataset", ...).

    `supplied` names the leading builder arguments that dlintro passes itself (never set in a
    config's `params`); `create(name, *supplied, **params)` passes them in this order.
    """

    def __init__(self, kind: str, supplied: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.supplied = tuple(supplied)
        self._entries: dict[str, F] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str | None = None, **meta: Any) -> Callable[[F], F]:
        """Decorator: register `fn` under `name` (default: its own name); duplicates are errors."""

        def decorator(fn: F) -> F:
            key = name or fn.__name__
            if key in self._entries:
                raise ValueError(f"{self.kind} '{key}' is registered twice")
            self._entries[key] = fn
            self._meta[key] = dict(meta)
            return fn

        return decorator

    def register_variant(
        self,
        name: str,
        base: str,
        description: str,
        *,
        params: Sequence[str] | None = None,
        **values: Any,
    ) -> None:
        """Register `name` as builder `base` with some parameters set (a named variant).

        The variant takes the supplied arguments and the base's parameters named in `params`
        (default: all those not given a value), in the base's order, so `dlintro models` lists
        its own parameters. `values` gives the new defaults of those parameters and fixes the
        others; base parameters neither listed nor given keep the base's default, fixed. The
        metadata is the base's, with `description`, `base` and the `fixed` values.
        """
        builder = self.get(base)
        signature = inspect.signature(builder, eval_str=True)
        configurable = self.params(base)
        wrong = [k for k in (*values, *(params or ())) if k not in configurable]
        if wrong:
            raise ValueError(f"{self.kind} variant '{name}': '{base}' has no parameter {wrong}")
        kept = [k for k in configurable if (k in params if params is not None else k not in values)]
        fixed = {k: v for k, v in values.items() if k not in kept}
        own = [p for k, p in signature.parameters.items() if k in self.supplied] + [
            configurable[k].replace(default=values.get(k, configurable[k].default)) for k in kept
        ]
        variant_signature = signature.replace(parameters=own)

        def variant(*args: Any, **kwargs: Any) -> Any:
            bound = variant_signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return builder(**bound.arguments, **fixed)

        variant.__signature__ = variant_signature  # type: ignore[attr-defined]
        variant.__name__ = variant.__qualname__ = name
        variant.__doc__ = f"`{base}` with " + ", ".join(f"{k}={v!r}" for k, v in fixed.items())
        meta = {**self._meta[base], "description": description, "base": base, "fixed": fixed}
        self.register(name, **meta)(variant)  # type: ignore[arg-type]

    def get(self, name: str) -> F:
        """The builder called `name`, or a UserError listing the valid names."""
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(sorted(self._entries))
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, self.names())}; valid: {valid}"
            ) from None

    def meta(self, name: str) -> dict[str, Any]:
        """The metadata given at registration (description, family, ...)."""
        self.get(name)
        return self._meta[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def params(
        self, name: str, skip: tuple[str, ...] | None = None
    ) -> dict[str, inspect.Parameter]:
        """The configurable parameters of a builder: all but `skip` (default: the supplied)."""
        skip = self.supplied if skip is None else skip
        sig = inspect.signature(self.get(name), eval_str=True)
        return {
            k: p
            for k, p in sig.parameters.items()
            if k not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }

    def check_params(
        self, name: str, params: Mapping[str, Any], skip: tuple[str, ...] | None = None
    ) -> None:
        """Validate user-supplied `params` for builder `name` without calling it.

        Raises ParamsError naming each bad parameter in `errors`: unknown names get a
        did-you-mean, values of the wrong type or out of range get pydantic's message (which
        states the bound); the message is the first one. `skip` defaults to the supplied names.
        """
        allowed = self.params(name, skip)
        errors: list[Problem] = []
        for key, value in params.items():
            if key not in allowed:
                hint = did_you_mean(key, list(allowed)) or (
                    f" (valid: {', '.join(allowed) or 'none'})"
                )
                errors.append(((key,), f"unknown parameter of {self.kind} '{name}'{hint}", value))
        for key, p in allowed.items():
            if p.default is inspect.Parameter.empty and key not in params:
                errors.append(((key,), f"missing required parameter of {self.kind} '{name}'", None))
        if errors:
            raise ParamsError(errors[0][1], errors)
        fields: dict[str, Any] = {}
        for key, p in allowed.items():
            if key not in params:
                continue
            ann = p.annotation if p.annotation is not inspect.Parameter.empty else Any
            fields[key] = (ann, ...)
        if not fields:
            return
        model = pydantic.create_model(  # type: ignore[call-overload]
            f"{self.kind}_{name}_params", __config__=STRICT, **fields
        )
        try:
            model.model_validate(dict(params))
        except pydantic.ValidationError as exc:
            # A union fails once per member; per parameter, the member that got furthest
            # (a list's bad item, not "should be a number") says what is wrong.
            found = exc.errors()
            order = {err["loc"][:1]: i for i, err in reversed(list(enumerate(found)))}
            found.sort(key=lambda err: (order[err["loc"][:1]], -len(err["loc"])))
            for err in found:
                errors.append((clean_loc(tuple(err["loc"])), _describe(err), err.get("input")))
            raise ParamsError(errors[0][1], errors) from None

    def check(self, name: str, params: Mapping[str, Any]) -> None:
        """check_params, as one line naming the builder and the parameter."""
        try:
            self.check_params(name, params)
        except ParamsError as exc:
            loc, msg, _ = exc.errors[0]
            where = ".".join(str(part) for part in loc)
            raise ParamsError(
                f"{self.kind} '{name}', parameter '{where}': {msg}", exc.errors
            ) from None

    def create(self, name: str, /, *supplied: Any, **params: Any) -> Any:
        """Build `name` from the supplied arguments (in `self.supplied` order) and `params`.

        An unknown name is an UnknownNameError; bad params, and a builder refusing its
        arguments (a ValueError), are one ParamsError. A builder's own UserError passes as it is.
        """
        if len(supplied) != len(self.supplied):
            raise TypeError(
                f"{self.kind} '{name}': create takes {len(self.supplied)} supplied arguments "
                f"({', '.join(self.supplied) or 'none'}), got {len(supplied)}"
            )
        return self.apply(name, self.get(name), *supplied, **params)

    def apply(self, name: str, fn: Callable[..., Any], /, *args: Any, **params: Any) -> Any:
        """Check `params` against builder `name`, then `fn(*args, **params)`, as `create` does.

        For companions of a builder that take its parameters (a dataset's info or loader).
        """
        self.check(name, params)
        try:
            return fn(*args, **params)
        except ValueError as exc:  # argument checks, including pydantic's ValidationError
            text = one_line(exc)
            raise ParamsError(f"{self.kind} '{name}': {text}", [((), text, None)], text) from None


def _describe(err: Mapping[str, Any]) -> str:
    """pydantic's message, lower-cased at the start, for one-line errors."""
    msg = str(err["msg"])
    return msg[:1].lower() + msg[1:]
