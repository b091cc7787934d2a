"""What goes on the wire for an outbox message: the envelope, telemetry in the JSON or compact form, zlib or not.

The store forms every message as today (the same id, stream, seq, body); only the bytes published differ. A compact
telemetry body is rewritten from the JSON one here, at publish time (``gateway.domain.compact``), so backlogs stored
by any version, and resends, go out in the configured form. A consumer tells the forms apart by the envelope's
``kind`` (``readings_compact``) and a compressed payload by its first byte (``0x78``, a zlib stream; JSON starts with
``{``), and with MQTT 5 by the user property ``encoding`` = ``zlib``.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.domain.compact import COMPACT_KIND, TagDictionary, TagEntry, compact_body
from gateway.domain.messages import MessageKind, OutboxMessage, wire_message
from gateway.domain.model import Tag

#: zlib level: 6 (the default) is within a few % of 9 on telemetry at a third of the CPU.
_ZLIB_LEVEL = 6


def dictionary_of(tags: Iterable[Tag]) -> TagDictionary:
    """The tag dictionary of the configured tags, in configuration order."""
    return TagDictionary(TagEntry(t.name, t.unit, t.data_type.value, t.device) for t in tags)


@dataclass(frozen=True, slots=True)
class WireEncoder:
    """Forms the payload of an outbox message; ``dictionary`` is required by the compact format."""

    site: str
    gateway: str
    telemetry_format: str = "json"
    compress: str = "none"
    dictionary: TagDictionary | None = None

    def __post_init__(self) -> None:
        if self.telemetry_format == "compact" and self.dictionary is None:
            raise ValueError("the compact format needs a tag dictionary")

    @property
    def compact(self) -> bool:
        return self.telemetry_format == "compact"

    @property
    def encoding(self) -> str | None:
        """The MQTT 5 user property ``encoding`` of every payload but state: ``zlib``, or none for JSON (so that the
        default form costs no more bytes than before)."""
        return "zlib" if self.compress == "zlib" else None

    def encode(self, msg: OutboxMessage, *, historical: bool) -> bytes:
        """The payload of ``msg``: its envelope, telemetry in the configured form, compressed when so configured."""
        kind, body = None, None
        if self.dictionary is not None and self.compact and msg.kind is MessageKind.READINGS:
            kind, body = COMPACT_KIND, compact_body(msg.body, self.dictionary)
        payload = wire_message(msg, site=self.site, gateway=self.gateway, historical=historical, kind=kind, body=body)
        return self.finish(payload)

    def finish(self, payload: bytes) -> bytes:
        """``payload`` compressed when so configured."""
        return zlib.compress(payload, _ZLIB_LEVEL) if self.compress == "zlib" else payload

    def tags_document(self) -> bytes | None:
        """The retained tag dictionary message, or None with the JSON format."""
        if self.dictionary is None or not self.compact:
            return None
        return self.finish(self.dictionary.document(site=self.site, gateway=self.gateway, compress=self.compress))
