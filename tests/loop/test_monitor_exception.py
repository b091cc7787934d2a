"""Monitor with report by exception: the snapshot (what the loop sees) has every poll, the store and its outbox only
what the filter admits; the rest is counted; readings the store drops are stored again at the next poll."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.bootstrap import _exception_filter
from gateway.clock import SteppedClock
from gateway.config import load_config
from gateway.config.loop import ValidationSettings
from gateway.domain.exception import Compression, ExceptionFilter, ReportRule
from gateway.domain.model import Quality, QualityReason, Reading
from gateway.domain.ports import FieldDevice
from gateway.mapek.monitor import Monitor
from gateway.metrics import READINGS_SUPPRESSED
from gateway.paths import bundled_config_dir
from gateway.testing.fakes import InMemoryKnowledgeStore
from tests.loop.test_polling import FakeDevice

LEVEL = ReportRule(every_poll=False, deadband=0.05, max_silence_s=60.0)


def _monitor(clock: SteppedClock, store: InMemoryKnowledgeStore, device: FieldDevice) -> Monitor:
    report = ExceptionFilter({"A": LEVEL}, default=ReportRule(every_poll=False))
    return Monitor(
        devices={device.name: device}, store=store, clock=clock, validation=ValidationSettings(), report=report
    )


def _poll(clock: SteppedClock, a: float | None, b: bool, quality: Quality = Quality.GOOD) -> list[Reading]:
    now = clock.now()
    reason = QualityReason.NONE if quality is Quality.GOOD else QualityReason.COMM_LOSS
    return [Reading("A", a, quality, now, now, "m", reason), Reading("B", b, Quality.GOOD, now, now)]


async def test_the_loop_sees_every_poll_and_the_store_only_what_changed() -> None:
    clock = SteppedClock(start=1000.0)
    store = InMemoryKnowledgeStore(clock=clock)
    device = FakeDevice(clock, name="plc-exc")
    monitor = _monitor(clock, store, device)
    before = READINGS_SUPPRESSED.labels("plc-exc")._value.get()
    polls = [(4.00, False), (4.03, False), (4.06, False), (4.04, True), (None, True), (None, True), (4.04, True)]
    seen = []
    for a, b in polls:
        quality = Quality.GOOD if a is not None else Quality.BAD
        await monitor.accept("plc-exc", _poll(clock, a, b, quality))
        seen.append(monitor.snapshot["A"].value)
        await clock.advance(1.0)
    assert seen == [a for a, _ in polls]  # the loop's view: every poll
    stored = [(r.tag, r.value, r.quality.value) for _, r in store.readings]
    assert stored == [
        ("A", 4.00, "good"),
        ("B", False, "good"),
        ("A", 4.06, "good"),  # left the 0.05 deadband around 4.00
        ("B", True, "good"),  # a discrete change
        ("A", None, "bad"),  # a quality change
        ("A", 4.04, "good"),  # and back
    ]
    assert READINGS_SUPPRESSED.labels("plc-exc")._value.get() - before == 2 * len(polls) - len(stored)
    sent = [r["tag"] for m in store.messages() for r in json.loads(m.body)["readings"]]
    assert sent == [t for t, _, _ in stored]  # the uplink sends what was stored, nothing else


async def test_readings_the_store_dropped_are_stored_at_the_next_poll() -> None:
    clock = SteppedClock(start=1000.0)
    store = InMemoryKnowledgeStore(clock=clock)
    device = FakeDevice(clock, name="plc-drop")
    monitor = _monitor(clock, store, device)
    await monitor.accept("plc-drop", _poll(clock, 4.0, False))
    store.fail_writes()
    await clock.advance(1.0)
    await monitor.accept("plc-drop", _poll(clock, 4.2, True))  # admitted, then dropped by the store
    store.heal()
    await clock.advance(1.0)
    await monitor.accept("plc-drop", _poll(clock, 4.2, True))  # unchanged, but what a reader holds is 4.0/False
    assert [(r.tag, r.value) for _, r in store.readings] == [("A", 4.0), ("B", False), ("A", 4.2), ("B", True)]


def test_the_composition_root_filters_unless_the_configuration_asks_for_every_poll(tmp_path: Path) -> None:
    settings = load_config(bundled_config_dir() / "gateway.toml").settings
    shipped = _exception_filter(settings)
    assert shipped is not None
    assert shipped.reduces  # on by default, as shipped
    assert shipped.rule("LIT-201") == ReportRule(every_poll=False, deadband=0.04, max_silence_s=900.0)
    full_rate = settings.model_copy(update={"reporting": settings.reporting.model_copy(update={"by_exception": False})})
    assert _exception_filter(full_rate) is None
    example = _exception_filter(load_config(bundled_config_dir() / "gateway.example.toml").settings)
    assert example is not None
    assert example.rule("FQI-110") == ReportRule(
        every_poll=False, deadband=1.0, max_silence_s=600.0, min_interval_s=60.0
    )


async def test_the_swinging_door_stores_the_previous_poll_and_the_held_back_reading_at_shutdown() -> None:
    clock = SteppedClock(start=1000.0)
    store = InMemoryKnowledgeStore(clock=clock)
    device = FakeDevice(clock, name="plc-sdt")
    sdt = ReportRule(every_poll=False, deadband=0.05, max_silence_s=60.0, compression=Compression.SWINGING_DOOR)
    report = ExceptionFilter({"A": sdt}, default=ReportRule(every_poll=False))
    monitor = Monitor(devices={"plc-sdt": device}, store=store, clock=clock, validation=ValidationSettings())
    monitor.report_by_exception(report)
    for a in [4.0, 4.1, 4.2, 4.3, 4.0, 3.7]:  # a ramp up, then down
        await monitor.accept("plc-sdt", _poll(clock, a, False))
        await clock.advance(1.0)
    stored = [(r.tag, r.value, r.receive_ts) for _, r in store.readings]
    assert stored == [("A", 4.0, 1000.0), ("B", False, 1000.0), ("A", 4.3, 1003.0)]  # 4.3 once 4.0 bent the line
    assert monitor.snapshot["A"].value == 3.7
    assert await monitor.flush_report() == 1
    assert [(r.tag, r.value, r.receive_ts) for _, r in store.readings][3:] == [("A", 3.7, 1005.0)]
    assert await monitor.flush_report() == 0
