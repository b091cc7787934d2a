"""Environment overrides that match no setting.

pydantic-settings reads only the variables that name a field, so ``GATEWAY_MQQT__HOST`` or ``GATEWAY_MQTT_HOST`` (one
underscore) would be ignored in silence, while the same typo in the file is an error. Every ``GATEWAY_`` variable
that names nothing is reported, with the nearest valid name.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from gateway.config.root import ENV_NESTED_DELIMITER, ENV_PREFIX, GatewaySettings

Problem = tuple[str, str]


def setting_variables(
    model: type[BaseModel] = GatewaySettings, prefix: str = ENV_PREFIX
) -> tuple[frozenset[str], frozenset[str]]:
    """The variable names that set a field (upper case), and the prefixes of those that set a key of a mapping."""
    exact: set[str] = set()
    open_prefixes: set[str] = set()
    for name, info in model.model_fields.items():
        var = prefix + name.upper()
        exact.add(var)
        annotation = _strip(info.annotation)
        sub = _single_model(annotation)
        if sub is not None:
            more, more_open = setting_variables(sub, var + ENV_NESTED_DELIMITER)
            exact |= more
            open_prefixes |= more_open
        elif typing.get_origin(annotation) is dict:
            open_prefixes.add(var + ENV_NESTED_DELIMITER)
    return frozenset(exact), frozenset(open_prefixes)


def unknown_variables(environ: Mapping[str, str]) -> list[Problem]:
    """``GATEWAY_`` variables of ``environ`` that set nothing, each with a sentence naming the nearest valid one."""
    exact, open_prefixes = setting_variables()
    candidates = sorted(exact)
    problems: list[Problem] = []
    for var in sorted(environ):
        upper = var.upper()
        if not upper.startswith(ENV_PREFIX) or upper in exact or upper.startswith(tuple(open_prefixes)):
            continue
        close = difflib.get_close_matches(upper, candidates, n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]}?)" if close else f" (names are {ENV_PREFIX}<SECTION>__<FIELD>)"
        problems.append((var, f"environment variable sets no setting and is ignored{hint}"))
    return problems


def _strip(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _single_model(annotation: Any) -> type[BaseModel] | None:
    """The model of a field that holds one model (or None); not of a list or a union of several models."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [_strip(a) for a in typing.get_args(annotation) if a is not type(None)]
        if len(models) == 1:
            return _single_model(models[0])
    return None
