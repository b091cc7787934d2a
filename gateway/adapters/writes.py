"""Rules every write obeys before anything leaves the gateway, whatever the protocol."""

from __future__ import annotations

import math
from collections.abc import Mapping

from gateway.domain.errors import WriteRefused
from gateway.domain.model import DataType, Tag, Value


def writable_tag(tags: Mapping[str, Tag], name: str, *, device: str) -> Tag:
    """The tag to write, or ``WriteRefused`` if it is unknown on this device or not marked writable."""
    tag = tags.get(name)
    if tag is None:
        raise WriteRefused(f"{device}: no tag {name!r} on this device")
    if not tag.writable:
        raise WriteRefused(f"{device}: tag {name} is read-only")
    return tag


def checked_value(tag: Tag, value: Value) -> Value:
    """The value in engineering units, checked against the tag's type and range; ``WriteRefused`` otherwise."""
    if tag.data_type is DataType.BOOL:
        if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            return bool(value)
        raise WriteRefused(f"tag {tag.name} is a bool; cannot write {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WriteRefused(f"tag {tag.name} is numeric; cannot write {value!r}")
    if not math.isfinite(value):
        raise WriteRefused(f"tag {tag.name}: cannot write {value!r}")
    if tag.range is not None and not tag.range.contains(float(value)):
        raise WriteRefused(f"tag {tag.name}: {value} is outside its range [{tag.range.low}, {tag.range.high}]")
    return value
