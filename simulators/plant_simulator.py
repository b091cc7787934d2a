"""In-process simulator: the plant, its PLC and its servers as one async context manager, for tests, benchmarks,
``gateway demo`` and the ``gateway-sim`` command.

.. code-block:: python

    from gateway.clock import SteppedClock
    from simulators.plant_simulator import PlantSimulator

    async with PlantSimulator(clock=SteppedClock()) as sim:          # Modbus + OPC UA on 127.0.0.1, free ports
        client = AsyncModbusTcpClient("127.0.0.1", port=sim.modbus_port)
        await sim.advance(3600)                                        # one simulated hour, servers updated
        ...poll over TCP; compare with sim.state().tank_level_m...
        fid = await sim.inject({"kind": "burst", "flow_lps": 8})     # or a spec from simulators.faults
        await sim.stop_opcua(); ...; await sim.start_opcua()         # an OPC UA server restart, on the same port
        await sim.inject({"kind": "modbus_exception", "code": 2, "table": "input_register", "start": 0, "end": 9})
        await sim.clear(fid)
        print(sim.scorecard().format())

Time:

- ``SteppedClock`` (the default): nothing moves until ``await sim.advance(seconds)``, which steps the plant and the
  PLC at ``dt`` and advances the clock in lock-step, waking the clock's other sleepers (an in-process gateway) at
  their deadlines; then the servers show the new state. With ``follow_clock=True`` the simulator instead follows
  whoever advances the clock (``await clock.advance(...)``), one step per ``dt``.
- ``SystemClock`` / ``ScaledClock``: a background task keeps the plant at the clock's time (``ScaledClock(speed=60)``
  runs a simulated hour per minute) and publishes at most every 50 ms of real time.

The simulated present is ``clock.now()``; simulated seconds since the start are ``sim.t`` (``state().t_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from gateway.clock import SteppedClock
from gateway.config.pointmap import PointMap, load_point_map
from gateway.domain.ports import Clock
from gateway.logging import get_logger
from simulators.config import PlantConfig
from simulators.control import ControlServer
from simulators.faults import (
    ModbusDrop,
    ModbusExceptionFault,
    ModbusNoAnswer,
    ModbusSlow,
    OpcUaBadStatus,
    parse_fault,
)
from simulators.modbus_server import ModbusDeviceSpec, ModbusFaults, ModbusPlc, ModbusServerSpec, SimulatedModbusDevice
from simulators.opcua_security import ServerSecurity
from simulators.opcua_server import OpcUaPlc
from simulators.plc import Hoa, Value
from simulators.recorder import TrueStateRecorder
from simulators.scenario import Action, ClearFault, Scenario, SetHoa, SetRemote, WriteSignal, load_scenario
from simulators.scoring import PlantScore, Scorecard
from simulators.simulation import ActiveFault, Simulation, TrueState

log = get_logger("simulators.plant_simulator")

_MAX_CHUNK_S = 600.0  # simulated seconds between chances for the servers to answer during a long advance
_PUBLISH_PERIOD_S = 0.05  # real seconds between publications in real or scaled time


class PlantSimulator:
    """The booster station with its simulated PLCs on 127.0.0.1 (see the module docstring).

    Keyword arguments override the configuration: ports default to 0 (a free port; ``None`` takes the port from
    the configuration), ``modbus`` may be ``False`` or a list of ``ModbusServerSpec`` (several listeners and unit
    ids, each with its own point map, over the one plant), ``point_map`` replaces the configured map for the
    default Modbus device and the OPC UA server.
    """

    def __init__(
        self,
        config: PlantConfig | None = None,
        *,
        clock: Clock | None = None,
        seed: int | None = None,
        host: str | None = None,
        point_map: PointMap | Path | None = None,
        modbus: bool | Sequence[ModbusServerSpec] = True,
        modbus_port: int | None = 0,
        opcua: bool = True,
        opcua_port: int | None = 0,
        opcua_point_map: PointMap | Path | None = None,
        opcua_security: ServerSecurity | None = None,
        control_port: int | None = None,
        scenario: Scenario | Path | None = None,
        record_csv: Path | None = None,
        record_interval_s: float | None = None,
        follow_clock: bool = False,
    ) -> None:
        cfg = config or PlantConfig()
        if seed is not None:
            cfg = cfg.with_overrides(simulation={"seed": seed})
        self.cfg = cfg
        self.clock: Clock = clock if clock is not None else SteppedClock()
        self.host = host or cfg.servers.host
        self._point_map_arg = point_map
        self._modbus_arg = modbus
        self._modbus_port = cfg.servers.modbus.port if modbus_port is None else modbus_port
        self._opcua_enabled = opcua
        self._opcua_port = cfg.servers.opcua.port if opcua_port is None else opcua_port
        self._opcua_map_arg = opcua_point_map
        self._opcua_security = opcua_security
        self._control_port = control_port
        self._scenario_arg = scenario if scenario is not None else cfg.simulation.scenario
        self._record_csv = record_csv if record_csv is not None else cfg.simulation.record_csv
        self._record_interval = record_interval_s or cfg.simulation.record_interval_s
        self._follow = follow_clock or not isinstance(self.clock, SteppedClock)
        self.modbus_faults = ModbusFaults(fired=self._fault_fired)
        self.modbus_servers: list[ModbusPlc] = []
        self.opcua: OpcUaPlc | None = None
        self.control: ControlServer | None = None
        self.recorder: TrueStateRecorder | None = None
        self._pending: list[Callable[[], Awaitable[None]]] = []
        self._dirty = asyncio.Event()
        self._stack = AsyncExitStack()
        self._mono0 = 0.0
        self._sim: Simulation | None = None
        self._score: PlantScore | None = None

    # --- lifecycle ----------------------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()
        log.info("sim.stopped", t_s=self.sim.t)

    async def _start(self) -> None:
        sim = Simulation(self.cfg, epoch0=self.clock.now())
        self._sim = sim
        sim.fault_listeners.append(self._on_fault)
        await self._start_modbus()
        await self._start_opcua()
        await self._start_control()
        # Time starts now that everything listens: a scaled clock has moved while the OPC UA server was built.
        self._mono0 = self.clock.monotonic()
        sim.plant.epoch0 = self.clock.now()
        self._score = PlantScore(sim)
        if self._record_csv is not None:
            self.recorder = TrueStateRecorder(sim, self._record_csv, interval_s=self._record_interval)
            self._stack.callback(self.recorder.close)
        self._schedule_scenario()
        await self._publish(force=True)
        tasks = [asyncio.create_task(self._publisher(), name="sim-publisher")]
        if self._follow:
            tasks.append(asyncio.create_task(self._follow_clock(), name="sim-clock"))
        self._stack.push_async_callback(_cancel, tasks)
        await asyncio.sleep(0)  # let the clock follower park on the clock before anyone advances it
        log.info(
            "sim.started",
            modbus=[s.port for s in self.modbus_servers],
            opcua=self.opcua.endpoint if self.opcua else None,
            seed=self.cfg.simulation.seed,
            clock=type(self.clock).__name__,
        )

    def _point_map(self) -> PointMap:
        arg = self._point_map_arg
        if isinstance(arg, PointMap):
            return arg
        return load_point_map(arg or self.cfg.servers.point_map)

    async def _start_modbus(self) -> None:
        specs = self._modbus_specs()
        for index, spec in enumerate(specs):
            devices = [
                SimulatedModbusDevice(d, source=self.sim, faults=self.modbus_faults, on_write=self._client_wrote)
                for d in spec.devices
            ]
            server = ModbusPlc(index=index, host=self.host, port=spec.port, devices=devices, rtu=spec.rtu)
            values = self.sim.image()
            for device in devices:
                device.publish(values, force=True)
            await server.start()
            self._stack.push_async_callback(server.close)
            self.modbus_servers.append(server)

    def _modbus_specs(self) -> list[ModbusServerSpec]:
        arg = self._modbus_arg
        if arg is False or (arg is True and not self.cfg.servers.modbus.enabled):
            return []
        if arg is True:
            device = ModbusDeviceSpec(unit_id=self.cfg.servers.modbus.unit_id, point_map=self._point_map())
            return [ModbusServerSpec(port=self._modbus_port, devices=(device,))]
        assert not isinstance(arg, bool)
        return list(arg)

    async def _start_opcua(self) -> None:
        if not (self._opcua_enabled and self.cfg.servers.opcua.enabled):
            return
        arg = self._opcua_map_arg
        pmap = arg if isinstance(arg, PointMap) else load_point_map(arg) if arg else self._point_map()
        server = OpcUaPlc(
            source=self.sim,
            point_map=pmap,
            host=self.host,
            port=self._opcua_port,
            path=self.cfg.servers.opcua.path,
            on_write=self._dirty.set,
            security=self._opcua_security,
        )
        await server.start()
        self._stack.push_async_callback(server.stop)
        self.opcua = server

    async def _start_control(self) -> None:
        if self._control_port is None:
            return
        control = ControlServer(self, host=self.host, port=self._control_port)
        await control.start()
        self._stack.push_async_callback(control.stop)
        self.control = control

    def _schedule_scenario(self) -> None:
        arg = self._scenario_arg
        if arg is None:
            return
        scenario = arg if isinstance(arg, Scenario) else load_scenario(arg)
        timeline = scenario.timeline(self.sim.now, self.cfg.simulation.utc_offset_h)
        for offset, action in timeline:
            self.sim.schedule(self.sim.t + offset, _bind(self._scenario_action, action))
        log.info("sim.scenario_loaded", name=scenario.name, events=len(timeline))

    def _scenario_action(self, action: Action) -> None:
        try:
            self.apply_action(action)
        except (KeyError, ValueError) as exc:
            log.error("sim.scenario_event_failed", kind=action.kind, error=str(exc))  # noqa: TRY400 - expected

    # --- properties ---------------------------------------------------------------------------------------------

    @property
    def sim(self) -> Simulation:
        """The synchronous core (plant, PLC, faults); available inside the context."""
        if self._sim is None:
            raise RuntimeError("the simulator is not running (use it as an async context manager)")
        return self._sim

    @property
    def modbus_port(self) -> int:
        """Port of the first Modbus server."""
        return self.modbus_servers[0].port

    @property
    def modbus_ports(self) -> list[int]:
        return [s.port for s in self.modbus_servers]

    @property
    def opcua_endpoint(self) -> str:
        if self.opcua is None:
            raise RuntimeError("the OPC UA server is not enabled")
        return self.opcua.endpoint

    @property
    def opcua_port(self) -> int:
        if self.opcua is None:
            raise RuntimeError("the OPC UA server is not enabled")
        return self.opcua.port

    @property
    def control_port(self) -> int | None:
        return self.control.port if self.control is not None else None

    @property
    def t(self) -> float:
        """Simulated seconds since the start."""
        return self.sim.t

    def endpoints(self) -> dict[str, Any]:
        """Where everything listens (what ``gateway-sim --ready-file`` writes)."""
        return {
            "host": self.host,
            "modbus_port": self.modbus_ports[0] if self.modbus_servers else None,
            "modbus_ports": self.modbus_ports,
            "opcua_endpoint": self.opcua.endpoint if self.opcua else None,
            "opcua_port": self.opcua.port if self.opcua else None,
            "control_port": self.control_port,
            "opcua_certificate": self._opcua_certificate(),
        }

    def _opcua_certificate(self) -> str | None:
        """The OPC UA server's certificate file, for clients to pin (None while it offers security None only)."""
        if self.opcua is None or not self.opcua.security.secure:
            return None
        return str(self.opcua.security.own.certificate.resolve())

    # --- time ---------------------------------------------------------------------------------------------------

    async def advance(self, seconds: float) -> None:
        """Run ``seconds`` of simulated time now (stepped clock); the servers show the state reached.

        With ``follow_clock`` this advances the clock and lets the simulator follow it.
        """
        if seconds < 0:
            raise ValueError("time cannot go backwards")
        clock = self.clock
        if not isinstance(clock, SteppedClock):
            raise TypeError("advance() needs a SteppedClock; real and scaled clocks run by themselves")
        if self._follow:
            await clock.advance(seconds)
            await self._publish()
            return
        await self._run_to(self.sim.t + seconds, clock)
        await self._publish()

    async def _run_to(self, target: float, clock: SteppedClock | None) -> None:
        """Step to ``target``, pausing at timers (async fault actions) and the clock's sleepers on the way."""
        sim = self.sim
        while sim.t < target - 1e-9:
            end = min(target, sim.t + _MAX_CHUNK_S)
            timer = sim.next_timer()
            if timer is not None and timer > sim.t:
                end = min(end, timer)
            if clock is not None:
                deadline = clock.next_deadline()
                if deadline is not None:
                    end = min(end, max(deadline - self._mono0, sim.t + sim.dt))
            sim.run_until(end)
            if clock is not None:
                await clock.advance(max(0.0, self._mono0 + sim.t - clock.monotonic()))
            await self._drain()
            await asyncio.sleep(0)

    async def _follow_clock(self) -> None:
        """Keep the plant at the clock's time (real, scaled, or a stepped clock someone else advances)."""
        speed = float(getattr(self.clock, "speed", 1.0))
        tick = self.sim.dt if isinstance(self.clock, SteppedClock) else max(self.sim.dt, speed * _PUBLISH_PERIOD_S)
        while True:
            await self.clock.sleep(tick)
            await self._run_to(self.clock.monotonic() - self._mono0, None)
            await self._publish()

    # --- publishing ---------------------------------------------------------------------------------------------

    async def _publisher(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await self._publish()

    async def _publish(self, *, force: bool = False) -> None:
        sim = self.sim
        values = sim.image()
        for server in self.modbus_servers:
            for device in server.devices:
                device.publish(values, force=force)
        if self.opcua is not None:
            await self.opcua.publish(values, sim.bad_signals(), sim.now, force=force)

    async def publish(self) -> None:
        """Bring every server up to date with the plant now (``advance`` and the API calls do it themselves)."""
        await self._publish()

    def _client_wrote(self, _signals: set[str]) -> None:
        values = self.sim.image()
        for server in self.modbus_servers:
            for device in server.devices:
                device.publish(values)
        self._dirty.set()

    async def _drain(self) -> None:
        while self._pending:
            await self._pending.pop(0)()

    # --- faults -------------------------------------------------------------------------------------------------

    async def inject(self, fault: Any) -> str:
        """Start a fault now (a spec of ``simulators.faults`` or its dict); return its id for ``clear``."""
        active = self.sim.inject(parse_fault(fault))
        await self._drain()
        await self._publish()
        return active.id

    async def clear(self, fault_id: str | None = None) -> list[str]:
        """End a fault by id, or every fault (``None``); return the ids cleared."""
        ids = self.sim.clear(fault_id)
        await self._drain()
        await self._publish()
        return ids

    def faults(self) -> list[dict[str, Any]]:
        """The faults acting now."""
        return [f.as_dict() for f in self.sim.faults.values()]

    def _on_fault(self, active: ActiveFault, on: bool) -> None:
        """Communication faults reach the servers here (from the simulation, possibly in the middle of steps)."""
        spec = active.spec
        if isinstance(spec, ModbusNoAnswer | ModbusExceptionFault | ModbusSlow | ModbusDrop):
            if on:
                self.modbus_faults.active[active.id] = spec
            else:
                self.modbus_faults.active.pop(active.id, None)
        elif spec.kind == "modbus_disconnect":
            self._pending.append(self._drop_modbus)
        elif spec.kind == "plc_restart":
            self._pending.append(self._modbus_down if on else self._modbus_up)
        elif spec.kind == "opcua_restart" and self.opcua is not None:
            self._pending.append(self.opcua.go_down if on else self._opcua_up)
        elif spec.kind == "opcua_disconnect" and self.opcua is not None:
            self._pending.append(self._drop_opcua)
        elif isinstance(spec, OpcUaBadStatus):
            self._pending.append(self._apply_status_faults)

    def _fault_fired(self, fault_id: str) -> None:
        """A one-time fault (``modbus_drop`` with ``once``) has acted: clear it."""
        if fault_id in self.sim.faults:
            self.sim.clear(fault_id)

    async def _drop_modbus(self) -> None:
        for server in self.modbus_servers:
            server.drop_connections()

    async def _drop_opcua(self) -> None:
        if self.opcua is not None:
            self.opcua.drop_connections()

    async def _modbus_down(self) -> None:
        for server in self.modbus_servers:
            await server.stop()
        log.warning("sim.plc_restarting", t_s=self.sim.t)

    async def _modbus_up(self) -> None:
        if self.sim.restarting("plc_restart"):
            return  # another restart still holds the PLC down
        values = self.sim.image()
        for server in self.modbus_servers:
            if server.running:
                continue
            for device in server.devices:
                device.image.reset()
                device.publish(values, force=True)
            await server.start()
        log.info("sim.plc_restarted", t_s=self.sim.t)

    async def _opcua_up(self) -> None:
        if self.opcua is not None and not self.sim.restarting("opcua_restart"):
            await self.start_opcua()

    async def stop_opcua(self) -> None:
        """The OPC UA server goes down as in a restart: the listener closes, every connection and session is dropped,
        until ``start_opcua``. (The ``opcua_restart`` fault does the same on the simulated clock.)"""
        if self.opcua is None:
            raise RuntimeError("the OPC UA server is not enabled")
        await self.opcua.go_down()

    async def start_opcua(self) -> None:
        """The OPC UA server back on the same endpoint, serving the plant as it is now."""
        if self.opcua is None:
            raise RuntimeError("the OPC UA server is not enabled")
        await self.opcua.come_up()
        await self._publish(force=True)

    async def _apply_status_faults(self) -> None:
        if self.opcua is None:
            return
        statuses: dict[str, str] = {}
        for active in self.sim.faults.values():
            spec = active.spec
            if isinstance(spec, OpcUaBadStatus):
                statuses.update(dict.fromkeys(self.opcua.nodes_of(spec.points), spec.status))
        await self.opcua.set_status_faults(statuses, self.sim.now)
        await self._publish()

    # --- operator and client actions ----------------------------------------------------------------------------

    async def set_hoa(self, pump: str | int, mode: Hoa | str) -> None:
        """Turn a pump's Hand-Off-Auto selector (``"hand"``, ``"off"``, ``"auto"``)."""
        self.sim.set_hoa(pump, mode)
        await self._publish()

    async def set_remote(self, pump: str | int, enabled: bool) -> None:
        """Enable or disable Remote at a pump's panel."""
        self.sim.set_remote(pump, enabled)
        await self._publish()

    async def write(self, signal: str, value: Value) -> Value:
        """Write a signal as a client would; return what the PLC holds (raises ``WriteRejected``)."""
        stored = self.sim.write(signal, value)
        await self._publish()
        return stored

    def read(self, signal: str) -> Value | None:
        """A signal as the servers serve it now (measured, with sensor faults), or None if unknown."""
        return self.sim.image().get(signal)

    def apply_action(self, action: Action) -> None:
        """Apply a scenario action (a fault or an operator action) synchronously, at the current step."""
        if isinstance(action, SetHoa):
            self.sim.set_hoa(action.pump, action.mode)
        elif isinstance(action, SetRemote):
            self.sim.set_remote(action.pump, action.enabled)
        elif isinstance(action, WriteSignal):
            self.sim.write(action.signal, action.value)
        elif isinstance(action, ClearFault):
            self.sim.clear(None if action.fault == "all" else action.fault)
        else:
            self.sim.inject(action)
        self._dirty.set()

    # --- judging ------------------------------------------------------------------------------------------------

    def state(self) -> TrueState:
        """The true plant state now (no noise, no faults)."""
        return self.sim.state()

    def scorecard(self) -> Scorecard:
        """Energy, cost per m³, starts, levels since the start (or the last ``reset_scorecard``)."""
        assert self._score is not None
        return self._score.scorecard()

    def reset_scorecard(self) -> None:
        assert self._score is not None
        self._score.reset()


def _bind(fn: Callable[[Action], None], action: Action) -> Callable[[], None]:
    return lambda: fn(action)


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
