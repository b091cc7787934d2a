"""The compact telemetry payload and zlib compression: any batch of readings goes through the gateway's encoder and
the reference decoder (``gateway.uplink_decode``) and comes back exactly as the JSON form would have carried it."""

from __future__ import annotations

import json
import math
import re
import zlib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st
from referencing import Registry, Resource

from gateway.adapters.mqtt.encoding import WireEncoder, dictionary_of
from gateway.domain.compact import REASONS, TagDictionary, TagEntry
from gateway.domain.messages import MessageKind, OutboxMessage, Priority, event_body, readings_body
from gateway.domain.model import DataType, OpcUaAddress, Quality, QualityReason, Reading, Tag
from gateway.uplink_decode import DecodeError, Decoder, UnknownDictionary, payload_json

SCHEMAS = {
    p.name.removesuffix(".schema.json"): json.loads(p.read_text(encoding="utf-8"))
    for p in (Path(__file__).parents[2] / "config" / "schemas").glob("*.schema.json")
}
REGISTRY = Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in SCHEMAS.values())

DICTIONARY = TagDictionary(
    [
        TagEntry("LIT-201", "m", "float32", "pump-plc"),
        TagEntry("P-101.RUN", "", "bool", "pump-plc"),
        TagEntry("FT-100", "L/s", "float32", "rtu"),
    ]
)
#: Tags in the dictionary, one with another unit than the dictionary's, and one the dictionary does not know.
TAGS = [("LIT-201", "m"), ("P-101.RUN", ""), ("FT-100", "L/s"), ("FT-100", "m3/h"), ("XT-9", "bar")]
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**63), 2**63 - 1),
)


def validate(schema: str, doc: Any) -> None:
    jsonschema.Draft202012Validator(SCHEMAS[schema], registry=REGISTRY).validate(doc)


@st.composite
def batches(draw: st.DrawFn) -> list[Reading]:
    out = []
    for _ in range(draw(st.integers(1, 30))):
        tag, unit = draw(st.sampled_from(TAGS))
        quality = draw(st.sampled_from(list(Quality)))
        reason = draw(st.sampled_from(list(QualityReason)))
        ts = draw(st.floats(1.0e9, 2.0e9))  # any order: a delta may be negative
        out.append(Reading(tag, draw(VALUES), quality, ts, ts, unit, reason))
    return out


def outbox_message(body: bytes, *, kind: MessageKind = MessageKind.READINGS, seq: int = 7) -> OutboxMessage:
    stream = "readings/pump-plc" if kind is MessageKind.READINGS else "events"
    return OutboxMessage(12, stream, seq, "ab" * 16, kind, int(Priority.TELEMETRY), 1_764_160_000.5, body)


def encoder(compress: str = "none", dictionary: TagDictionary = DICTIONARY) -> WireEncoder:
    return WireEncoder(site="bs01", gateway="edge-1", telemetry_format="compact", compress=compress,
                       dictionary=dictionary)  # fmt: skip


def decoder_for(enc: WireEncoder) -> Decoder:
    decoder = Decoder()
    tags = enc.tags_document()
    assert tags is not None
    decoder.add_dictionary(tags)
    return decoder


@given(readings=batches(), compress=st.sampled_from(["none", "zlib"]), historical=st.booleans())
def test_any_batch_encodes_and_decodes_back_exactly(readings: list[Reading], compress: str, historical: bool) -> None:
    body = readings_body("pump-plc", readings)
    enc = encoder(compress)
    payload = enc.encode(outbox_message(body), historical=historical)

    decoded = decoder_for(enc).decode(payload)

    assert decoded["data"] == json.loads(body)  # the JSON form, exactly
    for item, r in zip(decoded["data"]["readings"], readings, strict=True):  # and what that form promises
        finite = not isinstance(r.value, float) or math.isfinite(r.value)
        assert (item["tag"], item["unit"], item["quality"]) == (r.tag, r.unit, r.quality.value)
        assert item["value"] == (r.value if finite else None)
        assert type(item["value"]) is type(r.value if finite else None)
        assert item["ts"] == round(r.source_ts * 1000)
        assert item.get("reason", "") == r.reason.value
    assert {k: decoded[k] for k in ("id", "stream", "seq", "historical", "kind")} == {
        "id": "ab" * 16, "stream": "readings/pump-plc", "seq": 7, "historical": historical, "kind": "readings"
    }  # fmt: skip


@given(readings=batches())
def test_the_compact_form_follows_its_schema(readings: list[Reading]) -> None:
    wire = json.loads(encoder().encode(outbox_message(readings_body("pump-plc", readings)), historical=False))
    validate("envelope", wire)
    validate("readings_compact", wire["data"])
    assert wire["kind"] == "readings_compact"


def test_rows_are_short_a_good_reading_of_a_known_tag_is_three_numbers() -> None:
    readings = [
        Reading("LIT-201", 4.12, Quality.GOOD, 1_764_160_000.1, 0.0, "m"),
        Reading("P-101.RUN", True, Quality.GOOD, 1_764_160_000.1, 0.0, ""),
        Reading("LIT-201", None, Quality.BAD, 1_764_160_001.1, 0.0, "m", QualityReason.COMM_LOSS),
        Reading("XT-9", 1.5, Quality.UNCERTAIN, 1_764_160_001.1, 0.0, "bar", QualityReason.STALE),
    ]
    wire = json.loads(encoder().encode(outbox_message(readings_body("pump-plc", readings)), historical=False))
    assert wire["data"] == {
        "device": "pump-plc",
        "tags": DICTIONARY.version,
        "t0": 1_764_160_000_100,
        "r": [[0, 0, 4.12], [1, 0, True], [0, 1000, None, 2, 2], ["XT-9", 0, 1.5, 1, 6, "bar"]],
    }


def test_other_messages_keep_their_form_and_everything_but_state_is_compressed() -> None:
    body = event_body("alarm", at=1.0, code="X")
    plain = WireEncoder(site="bs01", gateway="edge-1").encode(
        outbox_message(body, kind=MessageKind.EVENT), historical=False
    )
    zipped = encoder("zlib").encode(outbox_message(body, kind=MessageKind.EVENT), historical=False)
    assert plain[:1] == b"{"
    assert zipped[:1] == b"\x78"
    assert zlib.decompress(zipped) == plain
    assert Decoder().decode(zipped) == json.loads(plain)
    tags = encoder("zlib").tags_document()
    assert tags is not None
    assert tags[:1] == b"\x78"
    validate("tags", payload_json(tags))


def test_the_json_format_is_todays_bytes_and_has_no_dictionary() -> None:
    msg = outbox_message(readings_body("pump-plc", [Reading("LIT-201", 1.0, Quality.GOOD, 1.0, 1.0, "m")]))
    enc = WireEncoder(site="bs01", gateway="edge-1")
    assert enc.tags_document() is None
    assert enc.encoding is None
    assert json.loads(enc.encode(msg, historical=True))["data"] == json.loads(msg.body)


def test_a_message_of_a_dictionary_not_seen_yet_is_kept_for_later() -> None:
    body = readings_body("pump-plc", [Reading("LIT-201", 1.0, Quality.GOOD, 1.0, 1.0, "m")])
    payload = encoder().encode(outbox_message(body), historical=False)
    decoder = Decoder()
    with pytest.raises(UnknownDictionary) as caught:
        decoder.decode(payload)
    assert caught.value.version == DICTIONARY.version
    decoder.add_dictionary(DICTIONARY.document(site="bs01", gateway="edge-1", compress="none"))
    assert decoder.decode(payload)["data"] == json.loads(body)


def test_the_version_changes_with_the_configuration_and_codes_cover_every_reason() -> None:
    def tag(name: str, unit: str) -> Tag:
        return Tag(name, "plc", OpcUaAddress("ns=2;s=x"), DataType.FLOAT32, unit)

    one = dictionary_of([tag("LIT-201", "m"), tag("FT-100", "L/s")])
    assert one.version == dictionary_of([tag("LIT-201", "m"), tag("FT-100", "L/s")]).version
    assert one.version != dictionary_of([tag("LIT-201", "cm"), tag("FT-100", "L/s")]).version
    assert one.version != dictionary_of([tag("FT-100", "L/s"), tag("LIT-201", "m")]).version
    assert {r.value for r in QualityReason} <= set(REASONS)
    assert REASONS[0] == ""


def test_garbage_and_zlib_bombs_are_refused() -> None:
    with pytest.raises(DecodeError, match="first byte"):
        payload_json(b"\x00\x01")
    with pytest.raises(DecodeError, match="inflates beyond"):
        payload_json(zlib.compress(b"{" + b" " * (65 * 1024 * 1024) + b"}", 9))


def _docs_examples() -> list[dict[str, Any]]:
    text = (Path(__file__).parents[2] / "docs" / "uplink.md").read_text(encoding="utf-8")
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, flags=re.S)]


def test_the_docs_compact_example_decodes_with_the_docs_dictionary_into_the_json_form() -> None:
    docs = _docs_examples()
    [compact] = [d for d in docs if d.get("kind") == "readings_compact"]
    [tags] = [d for d in docs if "version" in d and "tags" in d]
    entries = [TagEntry(*t) for t in tags["tags"]]
    assert tags["version"] == TagDictionary(entries).version  # the version is what the gateway computes
    decoder = Decoder()
    decoder.add_dictionary(zlib.compress(json.dumps(tags).encode()))
    decoded = decoder.decode(json.dumps(compact).encode())
    validate("readings", decoded["data"])
    assert [(r["tag"], r["value"], r["quality"], r["ts"], r.get("reason")) for r in decoded["data"]["readings"]] == [
        ("LIT-201", 4.12, "good", 1_764_160_000_100, None),
        ("P-101.RUN", True, "good", 1_764_160_000_100, None),
        ("FT-101", None, "bad", 1_764_160_000_100, "comm_loss"),
        ("LIT-201", 4.13, "good", 1_764_160_001_100, None),
    ]
