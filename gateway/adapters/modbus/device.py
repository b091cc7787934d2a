"""The Modbus adapter: a ``FieldDevice`` over one pymodbus connection (Modbus TCP) or a shared RTU line.

Per device: one connection and one lock (a PLC answers one request at a time on a connection, and a write must not
interleave with a poll), a deadline on every request, retries of transient errors only, and a circuit breaker around
each operation, outside the retries. pymodbus's own retries and reconnect task are switched off: this adapter decides
when to try again, on the injected clock, and connects on demand, so a PLC that comes back after a power cycle is
picked up by the next poll the breaker lets through.

Errors are translated here, once: a timeout, a refused or dropped connection, a busy device → ``DeviceUnavailable``
(retried, counted by the breaker); exception codes 01/02/03 (and any other refusal) → ``DeviceRejected`` (the tags of
that request turn bad with reason ``device_exception``; not retried; the breaker counts it as an answer); an answer
that does not match its request (``frames.py`` checks every one before it is decoded) → ``ProtocolError`` (the tags of
that request turn bad with reason ``protocol_error``; not retried; the connection is closed to start clean; the
breaker counts the poll or write as failed).

Over Modbus RTU (``transport = "rtu_serial"`` or ``"rtu_tcp"``) the device shares its line (``line.py``) with the
other units on it and takes one turn per request. A timeout or a malformed answer does not close the line; a CRC
error, an answer begun but not finished and a unit that sends nothing are ``LineFault``s (kinds ``crc``, ``timeout``,
``silent``): retried like a timeout, and the reasons of the readings they leave bad (``crc_error``, ``timeout``,
``unit_silent``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Self

from prometheus_client import Counter
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.client.base import ModbusBaseClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from gateway.adapters.breaker import BreakerState, CircuitBreaker
from gateway.adapters.device_common import DeviceBooks, ReadBack, confirm_by_read_back
from gateway.adapters.modbus.codec import BlockDecoder, ReadingBuilder, modbus_address, raw_fits
from gateway.adapters.modbus.frames import (
    CheckedRtuFramer,
    CheckedSocketFramer,
    MalformedAnswer,
    ProtocolError,
    use_checked_framer,
)
from gateway.adapters.modbus.line import LineFault, RtuLine
from gateway.adapters.modbus.planner import PlanLimits, PlanMode, ReadPlan, ReadRequest, plan_reads, split_at_gaps
from gateway.adapters.modbus.pymodbus_calls import Call, WriteOp, payload_length, payload_size, read_call, write_op
from gateway.adapters.modbus.responses import use_fast_responses
from gateway.adapters.retry import RetryPolicy, call_with_retry
from gateway.adapters.writes import checked_value, writable_tag
from gateway.config.devices import ModbusDeviceSettings
from gateway.domain.errors import DeviceRejected, DeviceUnavailable, WriteRefused
from gateway.domain.model import Quality, QualityReason, Reading, Tag, Value
from gateway.domain.ports import Clock, DeviceHealth, WriteResult
from gateway.logging import get_logger
from gateway.metrics import BREAKER_STATE, DEVICE_ERRORS
from gateway.tasks import cancellation_kept

log = get_logger("gateway.adapters.modbus")

#: Exception codes that mean "not now" rather than "no": acknowledge (05), busy (06), gateway path (0A), gateway
#: target did not answer (0B). They are retried and counted like a timeout.
TRANSIENT_CODES = frozenset({0x05, 0x06, 0x0A, 0x0B})
EXCEPTION_NAMES = {
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "server device failure",
    0x05: "acknowledge",
    0x06: "server device busy",
    0x08: "memory parity error",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target failed to respond",
}


class _Compiled:
    """A planned request with everything a poll needs precomputed: the call, the decoder, the reading builder."""

    __slots__ = ("builder", "call", "decoder", "request", "size", "tags")

    def __init__(self, request: ReadRequest, unit: int) -> None:
        self.request = request
        self.call = read_call(request.table, request.address, request.count, unit)
        self.decoder = BlockDecoder(start=request.address, count=request.count, tags=request.tags)
        self.tags = self.decoder.tags
        self.builder = ReadingBuilder(self.tags)
        self.size = payload_size(request.table, request.count)

    def readings(self, response: ModbusPDU, *, now: float) -> list[Reading]:
        bits = self.decoder.bit_table
        if payload_length(response, bits=bits) != self.size:  # the framer refuses such answers: this is a backstop
            return self.bad(QualityReason.PROTOCOL_ERROR, now=now)
        values = self.decoder.decode_bits(response.bits) if bits else self.decoder.decode_registers(response.registers)
        return self.builder.readings(values, now=now)

    def bad(self, reason: QualityReason, *, now: float) -> list[Reading]:
        return [Reading(t.name, None, Quality.BAD, now, now, t.unit, reason) for t in self.tags]


class ModbusDevice:
    """A Modbus TCP PLC or RTU behind the ``FieldDevice`` port. Use as an async context manager.

    ``line`` is the RTU line the device shares with the other units on it (the factory builds one per line); an RTU
    device given none gets a line of its own. ``plan_mode="per_tag"`` reads each tag with its own request: only for
    benchmarks (the baseline to beat).
    """

    def __init__(
        self,
        *,
        settings: ModbusDeviceSettings,
        tags: Sequence[Tag],
        clock: Clock,
        plan_mode: PlanMode = "merged",
        rng: random.Random | None = None,
        line: RtuLine | None = None,
    ) -> None:
        self.name = settings.name
        self._settings = settings
        self._tags = tuple(tags)
        self._by_name = {t.name: t for t in self._tags}
        self._clock = clock
        self._rng = rng or random.Random()
        plan = plan_reads(tags, limits=PlanLimits.of(settings), mode=plan_mode)
        self._compiled = [_Compiled(r, settings.unit_id) for r in plan.requests]
        self._lock = asyncio.Lock()
        if settings.is_rtu and line is None:
            line = RtuLine(settings=settings, clock=clock)
        self._line = line if settings.is_rtu else None
        self._client: ModbusBaseClient | None = None
        self._framer: CheckedSocketFramer | CheckedRtuFramer | None = None
        self._in_flight = False
        self._down_reason = QualityReason.COMM_LOSS
        self._books = DeviceBooks(name=self.name, protocol="modbus", clock=clock, stale_limit_s=settings.stale_limit_s)
        self._breaker = CircuitBreaker(
            name=self.name,
            fail_max=settings.breaker.fail_max,
            reset_timeout_s=settings.breaker.reset_timeout_s,
            clock=clock,
            on_change=self._breaker_changed,
        )
        # A retry must not push the poll past its slot.
        self._retry = RetryPolicy(
            attempts=settings.retries + 1,
            first_delay_s=settings.retry_backoff_s,
            max_total_s=settings.poll_interval_s,
            attempt_s=settings.timeout_s,
        )
        self._metrics_init()

    def _metrics_init(self) -> None:
        self._m_breaker = BREAKER_STATE.labels(self.name)
        self._m_breaker.set(BreakerState.CLOSED.metric_value)

    # -- the FieldDevice port --------------------------------------------------------------------------------------

    @property
    def tags(self) -> Sequence[Tag]:
        return self._tags

    @property
    def plan(self) -> ReadPlan:
        """The requests one poll issues (after any split of a request the device refused for its gaps)."""
        return ReadPlan(tuple(c.request for c in self._compiled))

    @property
    def health(self) -> DeviceHealth:
        return self._books.status.health(self._breaker.state.value)

    @property
    def line(self) -> RtuLine | None:
        """The RTU line the device is on (None over Modbus TCP)."""
        return self._line

    async def __aenter__(self) -> Self:
        s = self._settings
        if self._line is not None:
            self._line.attach(self._connection_changed)
            self._client, self._framer = self._line.client, self._line.framer
            return await self._first_connect()
        # Retries and reconnects are ours (on the injected clock, under the breaker): pymodbus's are switched off.
        # Its own timeout is only a backstop behind our deadline, so that it never logs a request as lost first.
        self._client = AsyncModbusTcpClient(
            s.host,
            port=s.port,
            name=f"modbus[{self.name}]",
            reconnect_delay=0,
            reconnect_delay_max=0,
            timeout=2 * s.timeout_s + 1.0,
            retries=0,
            trace_connect=self._connection_changed,
        )
        self._framer = use_checked_framer(self._client)
        use_fast_responses(self._client)
        return await self._first_connect()

    async def _first_connect(self) -> Self:
        try:
            async with self._lock:
                await self._connected_client()
            self._books.status.succeeded()
        except DeviceUnavailable as exc:
            self._books.status.failed(str(exc))  # the gateway starts anyway; polls pick the device up when it is back
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._line is not None:
            self._line.detach(self._connection_changed)
        else:
            self._drop_connection()
        self._client = None

    async def poll(self) -> list[Reading]:
        """Read every tag with the planned requests; never raises for a device fault (readings carry the quality)."""
        started = time.perf_counter()  # real elapsed time for the metric, whatever the injected clock does
        async with self._lock:
            readings = await self._poll_locked()
        self._books.polled(started, readings)
        return readings

    async def write(self, tag: str, value: Value) -> WriteResult:
        """Write one tag (FC5/FC15 coils, FC6/FC16 registers, FC22 register bits) and confirm it by read-back."""
        target = writable_tag(self._by_name, tag, device=self.name)
        if not modbus_address(target).table.is_writable:
            raise WriteRefused(f"{self.name}: tag {tag} is in a read-only table")
        engineering = checked_value(target, value)
        raw = target.to_raw(engineering)
        if not raw_fits(target, raw):
            raise WriteRefused(f"tag {tag}: {value} is {raw} in source units, beyond {target.data_type.value}")
        op = write_op(target, raw, unit=self._settings.unit_id, multiple=self._settings.write_multiple)
        started = self._clock.monotonic()
        async with self._lock:
            self._breaker.check()
            try:
                result = await self._write_locked(target, engineering, op, started)
            except DeviceUnavailable as exc:
                self._breaker.record_failure()
                self._books.status.failed(str(exc))
                raise
            except BaseException:
                self._breaker.release()
                raise
        # Confirmed writes are recorded with their decision; only a write that did not take is worth a log line.
        (log.debug if result.confirmed else log.warning)(
            "modbus.write",
            device=self.name,
            tag=tag,
            value=engineering,
            fc=op.function_code,
            confirmed=result.confirmed,
            detail=result.detail,
        )
        return result

    # -- polling ---------------------------------------------------------------------------------------------------

    async def _poll_locked(self) -> list[Reading]:
        if not self._breaker.allow():  # failing fast: for the reason it failed (over RTU: silent, CRC, timeout)
            return self._books.quality.missed(self._tags, self._down_reason)
        fresh: list[Reading] = []
        malformed: list[str] = []
        try:
            for compiled in list(self._compiled):
                fresh += await self._read(compiled, malformed)
        except DeviceUnavailable as exc:
            self._breaker.record_failure()
            self._books.status.failed(str(exc))
            got = {r.tag for r in fresh}
            reason = self._down_reason = exc.reason if isinstance(exc, LineFault) else QualityReason.COMM_LOSS
            return fresh + self._books.quality.missed([t for t in self._tags if t.name not in got], reason)
        except BaseException:
            self._breaker.release()
            raise
        if malformed:
            self._breaker.record_failure()
            self._books.status.failed(malformed[0])
            self._down_reason = QualityReason.COMM_LOSS  # an open breaker after wrong answers: as over Modbus TCP
        else:
            self._breaker.record_success()
            self._books.status.succeeded()
        return fresh

    async def _read(self, compiled: _Compiled, malformed: list[str]) -> list[Reading]:
        """The readings of one planned request; a malformed answer's problem is appended to ``malformed``."""
        try:
            response = await call_with_retry(
                lambda: self._request(compiled.call, self._books.reads),
                policy=self._retry,
                clock=self._clock,
                rng=self._rng,
                on_retry=self._retrying,
            )
        except DeviceRejected as exc:
            if exc.code == 0x02 and compiled.request.unused:
                return await self._split(compiled, exc, malformed)
            readings = compiled.bad(QualityReason.DEVICE_EXCEPTION, now=self._clock.now())
        except ProtocolError as exc:
            malformed.append(f"{exc}; request {compiled.request.describe()}")
            readings = compiled.bad(QualityReason.PROTOCOL_ERROR, now=self._clock.now())
        else:
            readings = compiled.readings(response, now=self._clock.now())
        self._books.quality.record_block(compiled, readings)  # every reading of the request, good or not, in one store
        return readings

    async def _split(self, compiled: _Compiled, exc: DeviceRejected, malformed: list[str]) -> list[Reading]:
        """A device that refuses the unused addresses a merged request bridges gets gap-free requests from now on."""
        pieces = [_Compiled(r, self._settings.unit_id) for r in split_at_gaps(compiled.request)]
        index = self._compiled.index(compiled)
        self._compiled[index : index + 1] = pieces
        # The quality tracker keeps the old request's last readings: the pieces' own records supersede them.
        log.warning(
            "modbus.plan_split",
            device=self.name,
            request=compiled.request.describe(),
            into=len(pieces),
            error=str(exc),
        )
        readings: list[Reading] = []
        for piece in pieces:
            readings += await self._read(piece, malformed)
        return readings

    def _retrying(self, attempt: int, exc: DeviceUnavailable, delay: float) -> None:
        log.debug("modbus.retry", device=self.name, attempt=attempt, delay_s=round(delay, 3), error=str(exc))

    # -- writing ---------------------------------------------------------------------------------------------------

    async def _write_locked(self, tag: Tag, value: Value, op: WriteOp, started: float) -> WriteResult:
        await self._connected_client()  # raises DeviceUnavailable while nothing has been sent
        sent_error = ""
        try:
            await self._request(op.send, self._books.writes)  # never retried: a repeated write could act twice
        except DeviceRejected as exc:
            self._breaker.record_success()
            return self._books.write_result(
                tag, value, started, confirmed=False, read_back=None, detail=f"refused by the device: {exc}"
            )
        except DeviceUnavailable as exc:
            # The request left; whether it was applied is unknown: the read-back finds out.
            sent_error = f"no response to the write ({exc}); "
        except ProtocolError as exc:
            sent_error = f"no valid answer to the write ({exc}); "  # as unknown as no answer at all
        confirmed, read_back, detail, malformed = await self._confirm(op)
        if confirmed or not (sent_error or malformed):
            self._breaker.record_success()
            self._books.status.succeeded()
        else:
            self._breaker.record_failure()
            self._books.status.failed(sent_error + detail)
        detail = sent_error + detail
        return self._books.write_result(tag, value, started, confirmed=confirmed, read_back=read_back, detail=detail)

    async def _confirm(self, op: WriteOp) -> tuple[bool, Value | None, str, bool]:
        """Read back until the device shows the written value or ``write_confirm_timeout_s`` has passed.

        Returns whether it did, the last value read back, what happened, and whether a read-back was malformed.
        """

        async def read() -> ReadBack:
            response = await self._read_back(op)
            return ReadBack(op.value_of(response), op.matches(response))

        c = await confirm_by_read_back(
            read,
            clock=self._clock,
            timeout_s=self._settings.write_confirm_timeout_s,
            failures=(DeviceUnavailable, ProtocolError),
            refusals=(DeviceRejected,),
        )
        malformed = any(issubclass(kind, ProtocolError) for kind in c.failed_with)
        return c.confirmed, c.read_back, c.detail, malformed

    async def _read_back(self, op: WriteOp) -> ModbusPDU:
        response = await self._request(op.read_back, self._books.reads)
        if not op.fits(response):  # the framer refuses such answers: this is a backstop
            self._failed_request("protocol")
            raise ProtocolError(self.name, "malformed answer: the read-back carries another number of values")
        return response

    # -- the connection --------------------------------------------------------------------------------------------

    async def _connected_client(self) -> ModbusBaseClient:
        client = self._client
        if client is None:
            raise RuntimeError(f"{self.name}: the adapter is used outside its 'async with' block")
        if client.connected:
            return client
        async with self._line.connecting if self._line is not None else contextlib.nullcontext():
            if client.connected:  # another device on the line connected it meanwhile
                return client
            try:
                with cancellation_kept():
                    async with asyncio.timeout(self._settings.timeout_s):
                        connected = await client.connect()
            except TimeoutError:
                connected = False
        if not connected:
            DEVICE_ERRORS.labels(self.name, "connection").inc()
            raise DeviceUnavailable(self.name, f"cannot connect: {self._settings.where()}")
        return client

    @contextlib.asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        """Over RTU, one request at a time on the line; over Modbus TCP the device's own lock is enough."""
        if self._line is None:
            yield
            return
        async with self._line.turn():
            yield

    async def _request(self, call: Call, counter: Counter) -> ModbusPDU:
        """One request under the deadline, its errors translated. Not retried here."""
        async with self._turn():
            client = await self._connected_client()
            counter.inc()
            self._in_flight = True
            try:
                with cancellation_kept():
                    async with asyncio.timeout(self._settings.timeout_s):
                        response = await call(client)
            except TimeoutError as exc:
                raise self._timed_out() from exc
            except (ConnectionException, ModbusIOException, OSError) as exc:
                self._failed_request("connection", line_wide=True)
                raise DeviceUnavailable(self.name, f"connection lost: {exc}") from exc
            finally:
                self._in_flight = False
        if isinstance(response, MalformedAnswer):
            if response.kind == "crc":
                self._failed_request("crc")
                raise LineFault(self.name, response.problem, kind="crc", reason=QualityReason.CRC_ERROR)
            self._failed_request("protocol")
            raise ProtocolError(self.name, f"malformed answer: {response.problem}")
        return self._checked(response)

    def _timed_out(self) -> DeviceUnavailable:
        timeout = self._settings.timeout_s
        if self._line is None:
            self._failed_request("timeout")
            return DeviceUnavailable(self.name, f"no answer within {timeout} s")
        heard = self._line.heard
        if heard:
            self._failed_request("timeout")
            text = f"answer incomplete after {timeout} s ({heard} bytes)"
            return LineFault(self.name, text, kind="timeout", reason=QualityReason.TIMEOUT)
        self._failed_request("silent")
        text = f"unit {self._settings.unit_id} sent nothing within {timeout} s"
        return LineFault(self.name, text, kind="silent", reason=QualityReason.UNIT_SILENT)

    def _checked(self, response: ModbusPDU) -> ModbusPDU:
        if not response.isError():
            return response
        code = int(getattr(response, "exception_code", 0))
        text = f"exception code {code:02X} ({EXCEPTION_NAMES.get(code, 'unknown')})"
        if code in TRANSIENT_CODES:
            DEVICE_ERRORS.labels(self.name, "busy").inc()
            raise DeviceUnavailable(self.name, text)
        DEVICE_ERRORS.labels(self.name, "exception").inc()
        raise DeviceRejected(self.name, text, code=code)

    def _failed_request(self, kind: str, *, line_wide: bool = False) -> None:
        DEVICE_ERRORS.labels(self.name, kind).inc()
        if self._line is not None and not line_wide:
            # The other units on the line are fine: drop only what still comes for this request, and the line
            # waits for silence before the next one.
            self._line.forget_request()
            return
        # After a timeout a late answer could still arrive, after a malformed answer the rest of a frame: either could
        # be taken for the next request's answer. Start clean.
        self._drop_connection()

    def _drop_connection(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._framer is not None:
            self._framer.expect_nothing()
        self._books.status.set_connected(False)

    def _connection_changed(self, connected: bool) -> None:
        """pymodbus's connect/disconnect hook (called when the peer drops us, not when we close)."""
        self._books.status.set_connected(connected)
        if not connected and self._framer is not None:
            self._framer.expect_nothing()
        if not connected and self._in_flight and self._client is not None:
            # pymodbus lets a request whose connection dropped wait for its timeout; fail it now so that the retry
            # reconnects at once. ``ctx.response_future`` is the request's pending answer in pymodbus 3.16.
            pending = getattr(self._client.ctx, "response_future", None)
            if isinstance(pending, asyncio.Future) and not pending.done():
                pending.set_exception(ConnectionException("connection dropped by the device"))

    def _breaker_changed(self, old: BreakerState, new: BreakerState) -> None:
        self._m_breaker.set(new.metric_value)
        # Opening and closing are news; the open → half-open → open cycle of a device that stays down is not.
        if old is BreakerState.CLOSED:
            log_at = log.warning
        elif new is BreakerState.CLOSED:
            log_at = log.info
        else:
            log_at = log.debug
        log_at("modbus.breaker", device=self.name, old=old.value, new=new.value, retry_in_s=self._breaker.retry_in())
