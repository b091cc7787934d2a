"""The simulator's OPC UA server stops in bounded time and completely, whatever its clients do (issue 15: in a soak,
the rehearsed ``opcua_restart`` hung past the bench's 30 s bound).

asyncua's own stop closes the client connections first and the listener a few loop turns later, then waits for
every connection to end: a client that reconnects at once (the gateway does) got in between, and the stop waited on
that connection, 30 s for one without a session, for ever for one with. Here a connection is made to wait in the
listener's backlog as each stop begins, so that it is accepted in the middle of the stop every time, not only when
a busy loop lets a reconnect through.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.adapters.opcua import OpcUaDevice
from gateway.clock import SteppedClock, SystemClock
from gateway.domain.model import Quality
from simulators.opcua_server import OpcUaPlc
from simulators.plant_simulator import PlantSimulator
from tests.drivers.conftest import eventually
from tests.drivers.station import station_settings

RESTARTS = 20
#: Only against a hang: the stop takes milliseconds; asyncua's activation watchdog would end it after 30 s.
HANG_S = 20.0


@contextmanager
def _waiting_in_backlog(port: int) -> Iterator[socket.socket]:
    """A TCP connection the kernel has completed and the server has not yet accepted (no loop turn since)."""
    with socket.create_connection(("127.0.0.1", port), timeout=HANG_S) as sock:
        yield sock


def _leftovers(plc: OpcUaPlc) -> tuple[int, int]:
    """(connections asyncua still tracks, external sessions it still holds)."""
    server = plc._server
    assert server is not None
    return len(server.iserver.asyncio_transports), len(server.iserver._external_sessions)


def _closed_by_server(sock: socket.socket) -> bool:
    """The server ended the connection: reset (never accepted) or end of stream (accepted, then closed)."""
    sock.settimeout(HANG_S)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=HANG_S).close()
    except ConnectionRefusedError:
        return True
    return False


async def test_a_connection_waiting_as_the_stop_begins_is_closed_and_the_stop_ends() -> None:
    async with PlantSimulator(clock=SteppedClock(), modbus=False) as sim:
        assert sim.opcua is not None
        port = sim.opcua_port
        with _waiting_in_backlog(port) as late:
            async with asyncio.timeout(HANG_S):
                await sim.stop_opcua()
            assert _closed_by_server(late)  # not a connection left open
        assert _leftovers(sim.opcua) == (0, 0)
        assert _refused(port)  # no listener left behind
        await sim.start_opcua()  # the same port, bound again at once
        assert sim.opcua_port == port
        assert not _refused(port)


async def test_many_restarts_with_a_subscribed_gateway_each_stop_ends_and_the_reads_resume(tmp_path: Path) -> None:
    """The simulator and the gateway's adapter share one event loop, as in the soak; the adapter holds a session with
    a subscription and reconnects at once after each loss."""
    async with PlantSimulator(clock=SteppedClock(), modbus=False) as sim:
        assert sim.opcua is not None
        port = sim.opcua_port
        station = _Endpoint(sim.opcua_endpoint)
        options = {"read_mode": "subscribe", "poll_interval_s": 0.5, "timeout_s": 0.4, "publishing_interval_s": 0.1}
        settings = station_settings(tmp_path, station, opcua_areas=["PumpStation"], opcua=options, loop=False)  # type: ignore[arg-type]
        device = OpcUaDevice(
            settings=settings.device("tank-rtu"), tags=settings.tags_of("tank-rtu"), clock=SystemClock()
        )

        async def current() -> bool:
            readings = await device.poll()
            heartbeat = next(r for r in readings if r.tag == "HB-PLC")
            return heartbeat.quality is Quality.GOOD and heartbeat.value == sim.read("HB-PLC")

        async def lost() -> bool:
            return not device.health.connected

        async with device:
            await eventually(current)
            for _ in range(RESTARTS):
                with _waiting_in_backlog(port):
                    async with asyncio.timeout(HANG_S):
                        await sim.stop_opcua()
                assert _leftovers(sim.opcua) == (0, 0)
                assert _refused(port)
                await eventually(lost)
                await sim.advance(1)  # the heartbeat moves on while the server is away
                await sim.start_opcua()
                await eventually(current)  # a value served after the restart: the subscription is back


class _Endpoint:
    """What ``station_settings`` needs of a station: its OPC UA endpoint."""

    has_opcua = True

    def __init__(self, endpoint: str) -> None:
        self.opcua_endpoint = endpoint
