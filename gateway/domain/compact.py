"""The compact telemetry payload: readings as arrays against a tag dictionary, timestamps as deltas.

The store forms every telemetry body in the JSON form (``messages.readings_body``); with ``[mqtt] telemetry_format =
"compact"`` the uplink rewrites it at publish time into the compact form, still JSON::

    {"device": "pump-plc", "tags": "aa79923e87cc", "t0": 1764160000100,
     "r": [[0, 0, 4.12], [1, 0, true], [2, 0, null, 2, 2], [0, 1000, 4.13], ["XT-9", 0, 1.5, 0, 0, "bar"]]}

* ``tags`` names the tag dictionary (its ``version``), published retained on ``…/tags/{version}``;
* a row is ``[id, dt, value]``, ``[id, dt, value, quality]`` or ``[id, dt, value, quality, reason]``: ``id`` is the
  tag's index in the dictionary (whose entry gives name and unit), ``dt`` the source timestamp in ms minus the previous
  row's (the first row's minus ``t0``), ``quality`` an index into the dictionary's ``qualities`` (0, good, when
  absent) and ``reason`` into its ``reasons`` (0, none, when absent; an unknown reason travels as its string);
* a reading whose tag (with its unit) is not in the dictionary is ``[name, dt, value, quality, reason, unit]``.

Values, qualities, reasons and millisecond timestamps are those of the JSON form, exactly. The envelope is unchanged
but for ``kind``: ``readings_compact``. Schemas: ``config/schemas/readings_compact.schema.json`` and
``tags.schema.json``; the reference decoder is ``gateway.uplink_decode``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.domain.model import Quality, QualityReason

#: The envelope's ``kind`` of a compact telemetry message.
COMPACT_KIND = "readings_compact"

#: Codes are indexes: append only, never reorder (a consumer may hold an older dictionary's tables).
QUALITIES: tuple[str, ...] = (Quality.GOOD.value, Quality.UNCERTAIN.value, Quality.BAD.value)
REASONS: tuple[str, ...] = (
    "",
    "last_usable",
    "comm_loss",
    "device_exception",
    "out_of_range",
    "nan",
    "stale",
    "spike",
    "flatline",
    "model_residual",
    "sensor_fault",
    "not_connected",
    "decode_error",
    "substituted",
    "protocol_error",
    "clock_skew",
    "corrected",
    "contradicted",
    "crc_error",
    "timeout",
    "unit_silent",
)
_QUALITY_CODE = {q: i for i, q in enumerate(QUALITIES)}
_REASON_CODE = {r: i for i, r in enumerate(REASONS)}

assert {r.value for r in QualityReason} <= set(REASONS), "a new QualityReason needs a code appended to REASONS"


@dataclass(frozen=True, slots=True)
class TagEntry:
    """One tag of the dictionary: its id is its position."""

    name: str
    unit: str
    data_type: str
    device: str


class TagDictionary:
    """The tags a compact body refers to by id, with a version that changes whenever any of it does."""

    def __init__(self, entries: Iterable[TagEntry]) -> None:
        self.entries = tuple(entries)
        self._ids: dict[tuple[str, str], int] = {}
        for i, e in enumerate(self.entries):
            self._ids.setdefault((e.name, e.unit), i)
        content = {
            "tags": [[e.name, e.unit, e.data_type, e.device] for e in self.entries],
            "qualities": list(QUALITIES),
            "reasons": list(REASONS),
        }
        self._content = content
        self.version = hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]

    def id_of(self, name: str, unit: str) -> int | None:
        return self._ids.get((name, unit))

    def document(self, *, site: str, gateway: str, compress: str) -> bytes:
        """The retained ``…/tags/{version}`` message (``tags.schema.json``)."""
        return orjson.dumps(
            {"version": self.version, "site": site, "gateway": gateway, "compress": compress, **self._content}
        )


def compact_body(body: bytes, dictionary: TagDictionary) -> bytes:
    """The compact form of a JSON readings body (``messages.readings_body``)."""
    doc = orjson.loads(body)
    items: list[dict[str, Any]] = doc["readings"]
    t0 = items[0]["ts"] if items else 0
    rows, prev = [], t0
    for item in items:
        rows.append(_row(item, item["ts"] - prev, dictionary))
        prev = item["ts"]
    return orjson.dumps({"device": doc["device"], "tags": dictionary.version, "t0": t0, "r": rows})


def _row(item: dict[str, Any], dt: int, dictionary: TagDictionary) -> list[Any]:
    quality: int | str = _QUALITY_CODE.get(item["quality"], item["quality"])
    reason_text = item.get("reason", "")
    reason: int | str = _REASON_CODE.get(reason_text, reason_text)
    tag_id = dictionary.id_of(item["tag"], item["unit"])
    if tag_id is None:
        return [item["tag"], dt, item["value"], quality, reason, item["unit"]]
    if reason != 0:
        return [tag_id, dt, item["value"], quality, reason]
    if quality != 0:
        return [tag_id, dt, item["value"], quality]
    return [tag_id, dt, item["value"]]
