"""The configuration reference, generated from the models so that the documentation cannot drift from the code.

``python -m gateway.readme --update`` embeds it in the README; a test checks that the embedded copy is current.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from gateway.config.devices import ModbusTagSettings, OpcUaTagSettings
from gateway.config.root import GatewaySettings


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " \\| ".join(names) + (" (optional)" if type(None) in args else "")
    if origin in (list, tuple, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args if a is not Ellipsis)}]"
    return _plain_type_name(annotation)


def _plain_type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " \\| ".join(f"`{m.value}`" for m in annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "table"
    if isinstance(annotation, type):
        return {"Path": "path", "SecretStr": "secret"}.get(annotation.__name__, annotation.__name__)
    return str(annotation)


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        try:
            value = info.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return ""
    elif info.default is PydanticUndefined:
        return "**required**"
    else:
        value = info.default
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, list) and value and isinstance(value[0], BaseModel):
        return f"{len(value)} entries"
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None:
        return ""
    text = str(value).replace("|", "\\|")
    return f"`{text}`" if len(text) <= 60 else f"`{text[:57]}...`"


def _models(model: type[BaseModel], path: str) -> Iterator[tuple[str, type[BaseModel]]]:
    yield path, model
    for name, info in model.model_fields.items():
        for sub in _sub_models(info.annotation):
            suffix = "[]" if typing.get_origin(_strip(info.annotation)) is list else ""
            label = f"{path}.{name}{suffix}" if path else f"{name}{suffix}"
            if sub in (ModbusTagSettings, OpcUaTagSettings) and name == "tags":
                label = f"{label} ({'modbus' if sub is ModbusTagSettings else 'opcua'})"
            elif "protocol" in sub.model_fields:
                protocol = typing.get_args(sub.model_fields["protocol"].annotation)[0]
                label = f"{label} (protocol {protocol})"
            yield from _models(sub, label)


def _strip(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _sub_models(annotation: Any) -> list[type[BaseModel]]:
    annotation = _strip(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        out += _sub_models(arg)
    return out


def _first_paragraph(doc: str) -> str:
    """The docstring's first paragraph on one line (a sentence may wrap in the source)."""
    paragraph = doc.strip().split("\n\n", 1)[0]
    return " ".join(line.strip() for line in paragraph.splitlines())


def render() -> str:
    """Markdown: one table per section, every option with its type, default and description."""
    lines: list[str] = []
    seen: set[tuple[str, type[BaseModel]]] = set()
    shown: dict[type[BaseModel], str] = {}  # a section already shown in full, by model: later ones refer to it
    for path, model in _models(GatewaySettings, ""):
        if (path, model) in seen:
            continue
        seen.add((path, model))
        rows = [(n, i) for n, i in model.model_fields.items() if not _sub_models(i.annotation)]
        if not rows:
            continue
        title = f"`[{path}]`" if path else "top level"
        if model in shown:
            lines += [f"#### {title}", "", f"The options of {shown[model]}.", ""]
            continue
        shown[model] = title
        doc = _first_paragraph(model.__doc__ or "")
        lines += [f"#### {title}", ""]
        if doc and not doc.startswith("Usage docs"):
            lines += [doc, ""]
        lines += ["| option | type | default | description |", "|---|---|---|---|"]
        for name, info in rows:
            desc = (info.description or "").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{name}` | {_type_name(info.annotation)} | {_default(info)} | {desc} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
