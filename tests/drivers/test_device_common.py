"""What both device adapters share (``gateway/adapters/device_common.py``), through a small fake transport: the
read-back loop that confirms a write, on an injected clock, and the books a poll and a write keep."""

from __future__ import annotations

import time

import pytest

from gateway.adapters.device_common import CONFIRM_PAUSE_S, Confirmation, DeviceBooks, ReadBack, confirm_by_read_back
from gateway.domain.errors import DeviceRejected, DeviceUnavailable
from gateway.domain.model import OpcUaAddress, Quality, QualityReason, Reading, Tag, Value
from gateway.domain.ports import WriteResult
from gateway.metrics import REGISTRY
from tests.drivers.conftest import FastClock

SP = Tag("SP", "sketch", OpcUaAddress("ns=2;s=SP"), "float64", writable=True)
DEVICE = "sketch"  # its own metric labels: the counts below are this module's alone


class FakeTransport:
    """One register behind a link the test controls: ``down`` (no answer), ``refusing`` (the device says no to
    reads), ``lag`` (read-backs that still show the old value after a write)."""

    def __init__(self, value: float = 45.0) -> None:
        self.value = value
        self.down = False
        self.refusing = False
        self.lag = 0
        self.reads = 0
        self._written: float | None = None

    async def read(self) -> float:
        self.reads += 1
        if self.down:
            raise DeviceUnavailable(DEVICE, "no answer")
        if self.refusing:
            raise DeviceRejected(DEVICE, "illegal data address", code=0x02)
        if self._written is not None:
            if self.lag:
                self.lag -= 1
            else:
                self.value, self._written = self._written, None
        return self.value

    async def write(self, value: float) -> None:
        if self.down:
            raise DeviceUnavailable(DEVICE, "no answer")
        self._written = value


class SketchDevice:
    """The shape both adapters give their polls and writes, on the shared part and the fake transport."""

    def __init__(self, transport: FakeTransport, clock: FastClock, *, confirm_s: float = 1.0) -> None:
        self.transport = transport
        self.clock = clock
        self.confirm_s = confirm_s
        self.books = DeviceBooks(name=DEVICE, protocol="sketch", clock=clock, stale_limit_s=10.0)

    async def poll(self) -> list[Reading]:
        started = time.perf_counter()
        try:
            value = await self.transport.read()
        except DeviceUnavailable as exc:
            self.books.status.failed(str(exc))
            readings = self.books.quality.missed([SP], QualityReason.COMM_LOSS)
        else:
            self.books.status.succeeded()
            now = self.clock.now()
            readings = [Reading(SP.name, value, Quality.GOOD, now, now, SP.unit)]
            self.books.quality.record(readings)
        self.books.polled(started, readings)
        return readings

    async def write(self, value: float) -> WriteResult:
        started = self.clock.monotonic()
        self.books.writes.inc()
        await self.transport.write(value)
        c = await confirm(self.transport, self.clock, value, timeout_s=self.confirm_s)
        return self.books.write_result(
            SP, value, started, confirmed=c.confirmed, read_back=c.read_back, detail=c.detail
        )


async def confirm(transport: FakeTransport, clock: FastClock, written: Value, *, timeout_s: float) -> Confirmation:
    async def read() -> ReadBack:
        shown = await transport.read()
        return ReadBack(shown, shown == written)

    return await confirm_by_read_back(
        read, clock=clock, timeout_s=timeout_s, failures=(DeviceUnavailable,), refusals=(DeviceRejected,)
    )


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"device": DEVICE, **labels}) or 0.0


async def test_a_write_that_shows_late_is_confirmed_at_the_read_back_that_shows_it() -> None:
    transport, clock = FakeTransport(), FastClock()
    transport.lag = 2
    result = await SketchDevice(transport, clock).write(47.5)
    assert (result.confirmed, result.read_back, result.detail) == (True, 47.5, "confirmed by read-back")
    assert transport.reads == 3
    assert result.duration_s == pytest.approx(2 * CONFIRM_PAUSE_S)  # two pauses on the injected clock


async def test_a_write_that_never_shows_is_unconfirmed_once_the_time_is_up_with_the_last_value_read() -> None:
    transport, clock = FakeTransport(), FastClock()
    transport.lag = 1_000
    result = await SketchDevice(transport, clock, confirm_s=0.5).write(47.5)
    assert (result.confirmed, result.read_back) == (False, 45.0)
    assert result.detail == "read-back shows 45.0 after 0.5 s"
    # No read-back is started that could not be followed by another pause within the time: about ten in 0.5 s.
    assert 0.5 - CONFIRM_PAUSE_S - 1e-9 <= result.duration_s < 0.5
    assert transport.reads == round(result.duration_s / CONFIRM_PAUSE_S) + 1


async def test_failed_read_backs_are_tried_again_and_their_kinds_kept() -> None:
    transport, clock = FakeTransport(47.5), FastClock()
    transport.down = True

    async def heal() -> None:
        transport.down = clock.monotonic() < 2 * CONFIRM_PAUSE_S  # the third read-back answers

    async def read() -> ReadBack:
        await heal()
        shown = await transport.read()
        return ReadBack(shown, shown == 47.5)

    c = await confirm_by_read_back(read, clock=clock, timeout_s=1.0, failures=(DeviceUnavailable,))
    assert (c.confirmed, c.read_back, c.detail) == (True, 47.5, "confirmed by read-back")
    assert c.failed_with == (DeviceUnavailable, DeviceUnavailable)


async def test_a_link_down_for_the_whole_time_says_why_in_the_adapters_words() -> None:
    transport, clock = FakeTransport(), FastClock()
    transport.down = True

    async def read() -> ReadBack:
        return ReadBack(await transport.read(), False)

    c = await confirm_by_read_back(read, clock=clock, timeout_s=0.2, failures=(DeviceUnavailable,), describe=repr)
    assert not c.confirmed
    assert c.read_back is None
    assert c.detail == f"read-back failed: {DeviceUnavailable(DEVICE, 'no answer')!r} after 0.2 s"


async def test_a_refused_read_back_ends_the_confirmation_at_once() -> None:
    transport, clock = FakeTransport(), FastClock()
    transport.refusing = True
    c = await confirm(transport, clock, 47.5, timeout_s=1.0)
    assert (c.confirmed, c.read_back) == (False, None)
    assert c.detail == "read-back refused: sketch: illegal data address"
    assert transport.reads == 1
    assert clock.monotonic() == 0.0


async def test_an_error_the_adapter_does_not_name_is_not_swallowed() -> None:
    async def read() -> ReadBack:
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        await confirm_by_read_back(read, clock=FastClock(), timeout_s=1.0, failures=(DeviceUnavailable,))


async def test_the_books_of_polls_and_writes() -> None:
    transport, clock = FakeTransport(), FastClock()
    device = SketchDevice(transport, clock)
    good_before = metric("gateway_readings_total", quality="good")
    uncertain_before = metric("gateway_readings_total", quality="uncertain")
    polls_before = metric("gateway_poll_duration_seconds_count")
    writes_before = metric("gateway_device_requests_total", op="write")

    assert [r.value for r in await device.poll()] == [45.0]
    transport.down = True
    clock.advance(1.0)
    [held] = await device.poll()  # the last good value, held as uncertain within the stale limit
    assert (held.value, held.quality, held.reason) == (45.0, Quality.UNCERTAIN, QualityReason.LAST_USABLE)
    health = device.books.status.health(None)
    assert (health.state, health.consecutive_failures, health.last_error) == ("failing", 1, "sketch: no answer")
    transport.down = False
    await device.write(47.5)

    assert metric("gateway_readings_total", quality="good") - good_before == 1
    assert metric("gateway_readings_total", quality="uncertain") - uncertain_before == 1
    assert metric("gateway_poll_duration_seconds_count") - polls_before == 2
    assert metric("gateway_device_requests_total", op="write") - writes_before == 1
