"""The one registry mechanism: models, datasets, optimizers, schedules and augmentations.

A decorator registers a builder under a name; an unknown name fails with the valid names and a
did-you-mean. Builder parameters are validated from the builder's own signature (pydantic), so a
config value of the wrong type or out of range fails before any TensorFlow work starts.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

import pydantic

from dlintro.errors import UserError

F = TypeVar("F", bound=Callable[..., Any])

STRICT = pydantic.ConfigDict(strict=True, arbitrary_types_allowed=True)


def did_you_mean(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """' (did you mean X?)' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class UnknownNameError(UserError):
    """An unknown registry name; the message lists the valid names."""


class ParamsError(UserError):
    """Builder parameters failed validation; `errors` holds (param path, message, value)."""

    def __init__(self, message: str, errors: list[tuple[tuple[str | int, ...], str, Any]]):
        super().__init__(message)
        self.errors = errors


def validated(fn: F) -> F:
    """Wrap a builder so that its arguments are checked against its type hints (strict)."""
    return functools.wraps(fn)(pydantic.validate_call(config=STRICT)(fn))  # type: ignore[return-value]


class Registry(Generic[F]):
    """Named builders of one kind ("model", "dataset", ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
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

    def params(self, name: str, skip: tuple[str, ...] = ()) -> dict[str, inspect.Parameter]:
        """The configurable parameters of a builder (those not supplied by dlintro itself)."""
        sig = inspect.signature(self.get(name), eval_str=True)
        return {
            k: p
            for k, p in sig.parameters.items()
            if k not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }

    def check_params(
        self, name: str, params: Mapping[str, Any], skip: tuple[str, ...] = ()
    ) -> None:
        """Validate user-supplied `params` for builder `name` without calling it.

        Raises ParamsError naming each bad parameter: unknown names get a did-you-mean, values of
        the wrong type or out of range get pydantic's message (which states the bound).
        """
        allowed = self.params(name, skip)
        errors: list[tuple[tuple[str | int, ...], str, Any]] = []
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
            for err in exc.errors():
                loc = tuple(err["loc"])
                errors.append((loc, _describe(err), err.get("input")))
            raise ParamsError(errors[0][1], errors) from None


def _describe(err: Mapping[str, Any]) -> str:
    """pydantic's message, lower-cased at the start, for one-line errors."""
    msg = str(err["msg"])
    return msg[:1].lower() + msg[1:]
