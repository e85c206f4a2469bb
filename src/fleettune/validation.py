"""One line from a pydantic validation failure, for config and fleet files alike.

An unknown key is reported before anything else: a misspelt section (`devices` for `device`) also makes the
section it meant look missing, and the misspelling is what the user has to fix. Unknown keys name the keys
that are allowed there, and the closest one when it is close.
"""

from __future__ import annotations

import difflib
from typing import Any, get_args

from pydantic import BaseModel, ValidationError


def first_problem(exc: ValidationError, model: type[BaseModel]) -> str:
    """`field: what is wrong` for the error a user should fix first."""
    errors = exc.errors()
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(err["loc"])
    field = ".".join(str(p) for p in loc if not _union_branch(p)) or "config"
    if err["type"] == "extra_forbidden":
        return f"{field}: unknown key{_expected_keys(model, loc)}"
    message = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    shown = "" if isinstance(value, dict) or value is None else f" (got {value!r})"
    return f"{field}: {message}{shown}"


def _union_branch(part: Any) -> bool:
    """A part of an error's location that names which member of a union type failed (`int`, `str`,
    `literal['auto']`, ...), not a key the user wrote."""
    return isinstance(part, str) and (part in {"int", "float", "str", "bool", "none"} or "[" in part)


def _expected_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    owner = _model_at(model, loc[:-1])
    if owner is None:
        return ""
    keys = sorted(owner.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), keys, n=1, cutoff=0.7)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; expected one of: {', '.join(keys)}"


def _model_at(model: type[BaseModel], path: tuple[Any, ...]) -> type[BaseModel] | None:
    current = model
    for part in path:
        if isinstance(part, int):  # a list index: the item model was taken with the list's field
            continue
        field = current.model_fields.get(str(part))
        nested = _model_in(field.annotation) if field is not None else None
        if nested is None:
            return None
        current = nested
    return current


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        if (found := _model_in(arg)) is not None:
            return found
    return None
