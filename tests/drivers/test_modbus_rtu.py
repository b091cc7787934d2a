"""Modbus RTU: devices sharing a line, against the bundled PLC simulator serving RTU over TCP and on a pseudo-terminal.

The simulator runs on the fixture thread (``tests/drivers/station.py``) with its RTU line in front
(``simulators/rtu_line.py``: a simulated line speed when a test asks for one). The gateway's side is built from
settings by the factory, as the gateway builds it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.adapters.factory import build_devices
from gateway.adapters.modbus import ModbusDevice
from gateway.adapters.modbus.line_load import load_warnings
from gateway.clock import SystemClock
from gateway.config import load_config
from gateway.config.root import GatewaySettings
from gateway.domain.model import ModbusTable, Quality, QualityReason, Reading
from gateway.domain.ports import Clock
from gateway.mapek.polling import PollScheduler
from gateway.metrics import DEVICE_ERRORS
from gateway.testing.fault_proxy import FaultProxy
from simulators.modbus_server import ModbusDeviceSpec, ModbusPlc, ModbusServerSpec
from simulators.rtu_line import RtuServing
from tests.drivers.conftest import FastClock, ServerThread
from tests.drivers.station import POINT_MAP_FILE, Station, _toml
from tests.drivers.test_modbus_on_simulator import MODBUS_POINTS, assert_served
from tests.drivers.test_modbus_rtu_frames import framed

UNITS = (1, 2, 3)


def rtu_station(thread: ServerThread, **serving: Any) -> Station:
    """The station's PLC with units 1, 2 and 3 on one RTU line (RTU over TCP, and on a pty)."""
    spec = ModbusServerSpec(devices=tuple(ModbusDeviceSpec(unit_id=u) for u in UNITS), rtu=RtuServing(**serving))
    return Station(thread, opcua=False, modbus=[spec])


def plc(station: Station) -> ModbusPlc:
    assert station.sim is not None
    return station.sim.modbus_servers[0]


def line_settings(
    tmp_path: Path,
    *,
    transport: str,
    host_port: int = 0,
    pty: str | None = None,
    baud: int = 19200,
    full_map_unit: int | None = 1,
    **device: Any,
) -> GatewaySettings:
    """Three devices, units 1-3, on one line: unit ``full_map_unit`` reads the whole station map, the others two
    input registers each."""
    line: dict[str, Any] = {"baud_rate": baud, "parity": "N"}  # a pty takes no parity bit
    where: dict[str, Any] = {"host": "127.0.0.1", "port": host_port}
    if transport == "rtu_serial":
        line["port"], where = pty, {}
    text = '[gateway]\nsite = "bs01"\ngateway_id = "edge-test"\n[loop]\nenabled = false\n'
    for unit in UNITS:
        fields = {"name": f"rtu-{unit}", "protocol": "modbus", "transport": transport, "unit_id": unit}
        fields |= where | {"poll_interval_s": 1.0, "timeout_s": 0.5} | device | {"line": line}
        text += "[[devices]]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in fields.items())
        if unit == full_map_unit:
            text += f"[[devices.tags_from]]\nfile = {_toml(str(POINT_MAP_FILE))}\n"
            continue
        for address in (0, 1):
            text += (
                f'[[devices.tags]]\nname = "U{unit}.IR{address}"\ntable = "input_register"\n'
                f'address = {address}\ndata_type = "uint16"\n'
            )
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path).settings


def modbus_devices(settings: GatewaySettings, clock: Clock) -> list[ModbusDevice]:
    devices = build_devices(settings, clock=clock)
    assert all(isinstance(d, ModbusDevice) for d in devices)
    return [d for d in devices if isinstance(d, ModbusDevice)]


def served_registers(station: Station, unit: int, count: int) -> list[int]:
    async def read() -> list[int]:
        table = plc(station).devices[UNITS.index(unit)].image.tables[ModbusTable.INPUT_REGISTER]
        return list(table.registers[:count])

    return station.thread.call(read())


def errors(device: str, kind: str) -> float:
    return DEVICE_ERRORS.labels(device, kind)._value.get()


# -- a multi-drop line ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["rtu_tcp", "rtu_serial"])
async def test_three_units_share_one_line_and_read_what_each_serves(
    server_thread: ServerThread, tmp_path: Path, transport: str
) -> None:
    with rtu_station(server_thread, pty=transport == "rtu_serial") as station:
        station.set_hoa("P-102", "hand")
        station.advance(120)
        port, pty = plc(station).port, plc(station).pty_path
        settings = line_settings(tmp_path, transport=transport, host_port=port, pty=pty)
        devices = modbus_devices(settings, FastClock())
        assert len({id(d.line) for d in devices}) == 1  # one line object for the three units
        async with devices[0], devices[1], devices[2]:
            first, second, third = await asyncio.gather(*(d.poll() for d in devices))
        served = {name: station.read(point.signal_name) for name, point in MODBUS_POINTS.items()}
        asked = [station.requests(unit) for unit in UNITS]
        line = plc(station).line
        registers = served_registers(station, 2, 2)
    assert {r.tag for r in first} == MODBUS_POINTS.keys()
    for reading in first:
        assert_served(MODBUS_POINTS[reading.tag], reading, served[reading.tag])
    assert [(r.tag, r.value, r.quality) for r in second] == [
        ("U2.IR0", registers[0], Quality.GOOD),
        ("U2.IR1", registers[1], Quality.GOOD),
    ]
    assert [r.value for r in third] == registers  # unit 3 serves the same image
    assert all(asked)  # every unit was asked, over the one line
    assert line is not None
    assert line.accepted == (1 if transport == "rtu_tcp" else 0)  # one connection carried the three units


async def test_a_unit_that_stops_answering_does_not_hold_up_the_others(
    server_thread: ServerThread, tmp_path: Path
) -> None:
    """Unit 2 goes silent: it turns bad (unit_silent) while units 1 and 3 keep every poll slot; each waits for the
    silent unit's timeout at most once per poll."""
    timeout = 0.15
    with rtu_station(server_thread) as station:
        settings = line_settings(
            tmp_path,
            transport="rtu_tcp",
            host_port=plc(station).port,
            full_map_unit=None,
            poll_interval_s=0.5,
            timeout_s=timeout,
            retries=1,
        )
        devices = modbus_devices(settings, SystemClock())
        station.inject({"kind": "modbus_no_answer", "unit_id": 2})
        polls: dict[str, list[list[Reading]]] = {d.name: [] for d in devices}
        enough = asyncio.Event()

        async def sink(name: str, readings: list[Reading]) -> None:
            polls[name].append(readings)
            if min(len(p) for p in polls.values()) >= 5:
                enough.set()

        clock = SystemClock()
        schedulers = [PollScheduler(device=d, interval_s=0.5, clock=clock, sink=sink) for d in devices]
        async with devices[0], devices[1], devices[2], asyncio.TaskGroup() as group:
            tasks = [s.start(group) for s in schedulers]
            async with asyncio.timeout(30):  # only against a hang: five polls take 2.5 s
                await enough.wait()
            for task in tasks:
                task.cancel()
        served = served_registers(station, 1, 2)
    one, _, three = schedulers
    assert min(s.polls for s in schedulers) >= 5
    assert one.missed_slots == three.missed_slots == 0
    for s in (one, three):
        gaps = [b - a for a, b in zip(s.starts, list(s.starts)[1:], strict=False)]
        assert max(gaps) < 0.5 + timeout, gaps  # the slot kept; a late start at most one silent request late
    assert all(r.quality is Quality.GOOD for p in polls["rtu-1"] + polls["rtu-3"] for r in p)
    assert [r.value for r in polls["rtu-1"][-1]] == served
    assert {(r.quality, r.reason) for p in polls["rtu-2"] for r in p} == {(Quality.BAD, QualityReason.UNIT_SILENT)}
    assert errors("rtu-2", "silent") >= 2
    assert errors("rtu-1", "silent") == errors("rtu-3", "silent") == 0


# -- a noisy line --------------------------------------------------------------------------------------------------


async def test_a_line_that_corrupts_answers_gives_crc_errors_never_a_wrong_value(
    server_thread: ServerThread, tmp_path: Path
) -> None:
    with rtu_station(server_thread) as station:
        station.advance(60)
        async with FaultProxy(target_port=plc(station).port) as proxy:
            settings = line_settings(
                tmp_path, transport="rtu_tcp", host_port=proxy.port, retries=0, breaker={"fail_max": 100}
            )
            device = modbus_devices(settings, FastClock())[0]
            served = {name: station.read(point.signal_name) for name, point in MODBUS_POINTS.items()}
            before = errors("rtu-1", "crc")
            async with device:
                proxy.corrupt(every=1)  # every answer
                noisy = await device.poll()
                assert errors("rtu-1", "crc") == before + 1  # the first request's answer: the poll ends there
                proxy.corrupt(every=3)  # one answer in three
                mixed = [await device.poll() for _ in range(12)]
                proxy.corrupt(every=0)
                clean = await device.poll()
            corrupted = proxy.corrupted
    assert {(r.quality, r.reason) for r in noisy} == {(Quality.BAD, QualityReason.CRC_ERROR)}
    assert corrupted > 12
    assert errors("rtu-1", "crc") > before + 4
    for reading in (r for poll in mixed for r in poll):
        if reading.quality is Quality.GOOD:
            assert_served(MODBUS_POINTS[reading.tag], reading, served[reading.tag])  # never a corrupted value
        else:  # the last good value held (uncertain), or bad for the CRC error
            assert reading.reason in {QualityReason.LAST_USABLE, QualityReason.CRC_ERROR}, reading
    assert all(r.quality is Quality.GOOD for r in clean)


# -- 9 600 baud: merged reads make 1 Hz possible --------------------------------------------------------------------


async def test_at_9600_baud_merged_reads_poll_the_station_within_a_second_and_one_request_per_tag_cannot(
    server_thread: ServerThread, tmp_path: Path
) -> None:
    with rtu_station(server_thread, baud_rate=9600, latency_s=0.005) as station:
        settings = line_settings(tmp_path, transport="rtu_tcp", host_port=plc(station).port, baud=9600)
        dev = settings.device("rtu-1")
        tags = settings.tags_of("rtu-1")
        durations: dict[str, float] = {}
        for mode in ("merged", "per_tag"):
            device = ModbusDevice(settings=dev, tags=tags, clock=SystemClock(), plan_mode=mode)  # type: ignore[arg-type]
            async with device:
                started = time.perf_counter()
                readings = await device.poll()
                durations[mode] = time.perf_counter() - started
            assert all(r.quality is Quality.GOOD for r in readings), mode
    assert durations["merged"] < 1.0 < durations["per_tag"], durations


# -- verified writes, and a line with more to do than time --------------------------------------------------------


async def test_a_write_over_a_serial_line_is_confirmed_by_read_back(
    server_thread: ServerThread, tmp_path: Path
) -> None:
    with rtu_station(server_thread, pty=True) as station:
        settings = line_settings(tmp_path, transport="rtu_serial", pty=plc(station).pty_path)
        device = modbus_devices(settings, FastClock())[0]
        async with device:
            result = await device.write("PCV-301.SP", 47.5)
        held = station.read("PCV-301.SP")
    assert result.confirmed, result.detail
    assert result.read_back == pytest.approx(47.5)
    assert held == pytest.approx(47.5)  # the PLC took it


async def test_an_overloaded_line_counts_the_slots_it_misses_and_check_config_warns_of_it(
    server_thread: ServerThread, tmp_path: Path
) -> None:
    """At 9 600 baud the station's map takes ≈ 0.4 s a poll: polled every 0.3 s, unit 1 misses slots (counted), the
    small units 2 and 3 still get their turns, and check-config's load says so beforehand."""
    with rtu_station(server_thread, baud_rate=9600, latency_s=0.005) as station:
        settings = line_settings(
            tmp_path, transport="rtu_tcp", host_port=plc(station).port, baud=9600, poll_interval_s=0.3, timeout_s=0.25
        )
        devices = modbus_devices(settings, SystemClock())
        done = asyncio.Event()
        polls: dict[str, int] = {d.name: 0 for d in devices}
        not_good: list[Reading] = []

        async def sink(name: str, readings: list[Reading]) -> None:
            not_good.extend(r for r in readings if r.quality is not Quality.GOOD)
            polls[name] += 1
            if polls["rtu-1"] >= 5:
                done.set()

        clock = SystemClock()
        schedulers = [PollScheduler(device=d, interval_s=0.3, clock=clock, sink=sink) for d in devices]
        async with devices[0], devices[1], devices[2], asyncio.TaskGroup() as group:
            tasks = [s.start(group) for s in schedulers]
            async with asyncio.timeout(30):  # only against a hang: five polls take ≈ 2.5 s
                await done.wait()
            for task in tasks:
                task.cancel()
    one, two, three = schedulers
    assert not_good == []  # late, not failed: every poll answered within its timeouts
    assert one.missed_slots >= 3
    assert min(two.polls, three.polls) >= one.polls  # the small units are not starved by the big one
    [(_, warning)] = load_warnings(settings)
    assert "busy (above 70%)" in warning


class ScriptedLine:
    """An RTU-over-TCP outstation on raw asyncio streams (no pymodbus), answering FC03/FC04 reads by unit id: 1 half
    an answer, 2 nothing, 3 a whole answer with a bad CRC, 4 correctly (registers = their addresses)."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while request := await reader.readexactly(8):
                unit, fc = request[0], request[1]
                address, count = int.from_bytes(request[2:4], "big"), int.from_bytes(request[4:6], "big")
                data = b"".join((address + i).to_bytes(2, "big") for i in range(count))
                answer = framed(bytes([unit, fc, len(data)]) + data)
                if unit == 1:
                    writer.write(answer[: len(answer) // 2])
                elif unit == 3:
                    writer.write(answer[:-1] + bytes([answer[-1] ^ 0x5A]))
                elif unit == 4:
                    writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *_exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def test_crc_errors_incomplete_answers_and_a_silent_unit_are_told_apart(tmp_path: Path) -> None:
    text = '[gateway]\nsite = "bs01"\ngateway_id = "edge-test"\n[loop]\nenabled = false\n'
    async with ScriptedLine() as port:
        for unit in (1, 2, 3, 4):
            text += (
                f'[[devices]]\nname = "u{unit}"\nprotocol = "modbus"\ntransport = "rtu_tcp"\nhost = "127.0.0.1"\n'
                f"port = {port}\nunit_id = {unit}\ntimeout_s = 0.2\nretries = 0\nline = {{ baud_rate = 19200 }}\n"
                f'tags = [{{ name = "R{unit}", table = "holding_register", address = 7, data_type = "uint16" }}]\n'
            )
        path = tmp_path / "gateway.toml"
        path.write_text(text, encoding="utf-8")
        devices = modbus_devices(load_config(path).settings, SystemClock())
        before = {(d.name, k): errors(d.name, k) for d in devices for k in ("timeout", "silent", "crc")}
        async with devices[0], devices[1], devices[2], devices[3]:
            # one after the other on the line: the half answer unit 1 left must not count for unit 2 (silent)
            polls = [await d.poll() for d in devices]
            again = await devices[3].poll()
    kinds = {
        d.name: {k for k in ("timeout", "silent", "crc") if errors(d.name, k) > before[(d.name, k)]} for d in devices
    }
    assert kinds == {"u1": {"timeout"}, "u2": {"silent"}, "u3": {"crc"}, "u4": set()}
    assert [(r.quality, r.reason) for poll in polls[:3] for r in poll] == [
        (Quality.BAD, QualityReason.TIMEOUT),
        (Quality.BAD, QualityReason.UNIT_SILENT),
        (Quality.BAD, QualityReason.CRC_ERROR),
    ]
    assert [(r.value, r.quality) for r in polls[3] + again] == [(7, Quality.GOOD), (7, Quality.GOOD)]


async def test_a_crc_error_is_retried_at_once_and_the_retry_delivers(
    server_thread: ServerThread, tmp_path: Path
) -> None:
    with rtu_station(server_thread) as station:
        async with FaultProxy(target_port=plc(station).port) as proxy:
            settings = line_settings(tmp_path, transport="rtu_tcp", host_port=proxy.port, retries=1)
            device = modbus_devices(settings, FastClock())[0]
            served = {name: station.read(point.signal_name) for name, point in MODBUS_POINTS.items()}
            before = errors("rtu-1", "crc")
            async with device:
                proxy.corrupt(every=2)  # the first answer to each request: its retry gets through
                polls = [await device.poll() for _ in range(3)]
    assert errors("rtu-1", "crc") - before == 3 * len(device.plan.requests)
    for reading in (r for poll in polls for r in poll):
        assert_served(MODBUS_POINTS[reading.tag], reading, served[reading.tag])
