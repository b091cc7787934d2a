"""The simulated PLC on OPC UA (asyncua 2.1): the point map's nodes under Objects/Site/Area/Unit, with faults.

- The point map's namespace URI is registered first, so it gets index 2 (``ns=2;s=BS-01/Tank/ET-01/Level``).
- Node ids ``<Site>/<Area>/<Unit>/<Variable>`` build the hierarchy: folders for the site and its areas, an object per
  unit, variables named in the OPC 40223 Pumps vocabulary where the map says so. Variables carry the standard
  ``EngineeringUnits`` (EUInformation, UNECE codes) and ``EURange`` properties where the point has a unit or range.
- ``writable = true`` points are writable (AccessLevel CurrentRead|CurrentWrite); a write goes to the PLC first and
  is refused with ``BadOutOfRange`` when the PLC refuses it (``BadNotWritable`` for signals the plant produces).
- Values carry the simulated time as source and server timestamps; a broken instrument loop reads
  ``BadSensorFailure``; the ``opcua_bad_status`` fault makes chosen nodes read any Bad status code.
- The RTU's clock can run off: ``clock_offset_s`` (an option, settable at any time) plus the offsets of the
  ``opcua_clock_offset`` faults acting now go into every stamp written from then on, and into CurrentTime.
- ``go_down``/``come_up`` emulate a server restart on the same endpoint: the listener closes, client connections
  and sessions are dropped, and the same port is bound again. The stop is bounded (``STOP_GRACE_S`` for the
  connections to close, then they are aborted; ``STOP_BOUND_S`` for asyncua's clean-up) and complete: no listener,
  no connection and no session is left, so the port can be bound again at once.

asyncua's own ``BinaryServer.stop`` closes the client connections first and the listener last, a few loop turns
later, and then waits for every connection to end (``Server.wait_closed``). A client that reconnects at once (the
gateway does) gets in between: its new connection is never closed, and the stop waits for it, 30 s for one that
never activates a session (asyncua's activation watchdog), for ever for one that does. The stop here closes the
listener first and then every connection, including those accepted meanwhile.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from asyncua import ua
from asyncua.common.callback import CallbackType, ServerItemCallback
from asyncua.common.node import Node
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaStatusCodeError

from gateway.config.pointmap import Point, PointMap
from gateway.domain.model import RAW_LIMITS, DataType
from gateway.logging import get_logger
from simulators.faults import OpcUaClockOffset
from simulators.modbus_server import SignalSource
from simulators.opcua_security import ServerSecurity, restrict_user_tokens
from simulators.opcua_security import apply as apply_security
from simulators.plc import Value, WriteRejected
from simulators.simulation import ReadOnlySignal

log = get_logger("simulators.opcua")

#: How long the client connections get to close (their unsent data flushed) before they are aborted.
STOP_GRACE_S = 1.0
#: How long asyncua's clean-up of the closed connections (sessions, subscriptions) may take before the stop goes on.
STOP_BOUND_S = 5.0

_VARIANT = {
    DataType.BOOL: ua.VariantType.Boolean,
    DataType.INT16: ua.VariantType.Int16,
    DataType.UINT16: ua.VariantType.UInt16,
    DataType.INT32: ua.VariantType.Int32,
    DataType.UINT32: ua.VariantType.UInt32,
    DataType.FLOAT32: ua.VariantType.Float,
    DataType.FLOAT64: ua.VariantType.Double,
}
# UNECE Recommendation 20 common codes of the plant's units (OPC 10000-8 §5.6.3): unitId = the code's bytes.
_UNECE = {"m": "MTR", "L/s": "G51", "kW": "KWT", "kWh": "KWH", "%": "P1", "h": "HUR", "m3": "MTQ", "mg/L": "M1"}
_UNECE_URI = "http://www.opcfoundation.org/UA/units/un/cefact"
_CURRENT_TIME = ua.NodeId(ua.Int32(ObjectIds.Server_ServerStatus_CurrentTime), ua.Int16(0))
_STD_EU = ua.QualifiedName("EngineeringUnits", 0)
_STD_RANGE = ua.QualifiedName("EURange", 0)


def _child(nodeid: ua.NodeId, name: str) -> ua.NodeId:
    """Node id of a variable's property: ``BS-01/Tank/ET-01/Level#EURange``."""
    base = str(nodeid.Identifier) if nodeid.NodeIdType == ua.NodeIdType.String else nodeid.to_string()
    return ua.NodeId(ua.String(f"{base}#{name}"), nodeid.NamespaceIndex)


def _refused(code: int) -> UaStatusCodeError:
    """The error a PreWrite listener raises to fail the Write service call with ``code``."""
    return UaStatusCodeError(code)  # type: ignore[no-untyped-call]


def unit_id(code: str) -> int:
    """OPC UA EUInformation.unitId of a UNECE common code (``MTR`` → 5067858)."""
    value = 0
    for ch in code[:4]:
        value = value << 8 | ord(ch)
    return value


def eu_information(unit: str) -> ua.EUInformation:
    """EUInformation of a unit symbol (unitId −1 when it has no UNECE code here)."""
    code = _UNECE.get(unit)
    return ua.EUInformation(
        NamespaceUri=_UNECE_URI,
        UnitId=unit_id(code) if code else -1,
        DisplayName=ua.LocalizedText(unit),
        Description=ua.LocalizedText(unit),
    )


@dataclass(slots=True)
class _Var:
    point: Point
    node: Node
    variant: ua.VariantType
    data_type: DataType

    def variant_of(self, value: Value) -> ua.Variant:
        return _variant(self.data_type, value)


def _variant(dt: DataType, value: Value) -> ua.Variant:
    """An engineering value as the node's data type (integers rounded and saturated)."""
    vt = _VARIANT[dt]
    if dt is DataType.BOOL:
        return ua.Variant(bool(value), vt)
    if dt in (DataType.FLOAT32, DataType.FLOAT64):
        return ua.Variant(float(value), vt)
    low, high = RAW_LIMITS[dt]
    number = float(value)
    raw = round(number) if math.isfinite(number) else low
    return ua.Variant(min(max(raw, low), high), vt)


class OpcUaPlc:
    """An asyncua server exposing a point map's ``opcua`` addresses over a ``SignalSource`` (the simulation)."""

    def __init__(
        self,
        *,
        source: SignalSource,
        point_map: PointMap,
        host: str,
        port: int,
        path: str,
        on_write: Callable[[], None] | None = None,
        clock_offset_s: float = 0.0,
        security: ServerSecurity | None = None,
    ) -> None:
        self._source = source
        self.security = security or ServerSecurity()
        self.clock_offset_s = clock_offset_s
        self._on_write = on_write
        self.point_map = point_map
        self.host = host
        self.port = port
        self.path = path
        self._server: Server | None = None
        self._vars: dict[str, _Var] = {}  # node id string → variable
        self._by_signal: dict[str, list[_Var]] = {}
        self._last: dict[str, tuple[Value, bool]] = {}
        self._status_faults: dict[str, ua.StatusCode] = {}
        self.up = False
        self.namespace_index = 0

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}{self.path}"

    @property
    def node_ids(self) -> list[str]:
        return list(self._vars)

    # --- lifecycle ----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Build the address space (asyncua's standard nodes take a second or two) and listen."""
        server = Server()
        await server.init()
        server.set_endpoint(f"opc.tcp://{self.host}:{self.port}{self.path}")
        server.set_server_name("Booster station BS-01 (gateway-sim)")
        await apply_security(server, self.security)
        # The server's own clock task writes ServerStatus every second; our time is the simulation's.
        server.disable_clock()
        self.namespace_index = await server.register_namespace(self.point_map.meta.opcua_namespace)
        if self.namespace_index != 2:
            log.warning("opcua.namespace_index", expected=2, got=self.namespace_index)
        self._server = server
        await self._build(server)
        server.subscribe_server_callback(CallbackType.PreWrite, self._pre_write)
        server.subscribe_server_callback(CallbackType.PostWrite, self._post_write)
        await server.start()
        restrict_user_tokens(server)
        if server.bserver is not None:
            self.port = server.bserver.port
        self.up = True
        log.info("opcua.listening", endpoint=self.endpoint, nodes=len(self._vars), security=self.security.policies)

    async def stop(self) -> None:
        """Stop the server for good."""
        server, self._server = self._server, None
        if server is not None:
            self.up = False
            await close_binary_server(server)
            await server.stop()
            log.info("opcua.stopped", endpoint=self.endpoint)

    async def go_down(self) -> None:
        """Restart, first half: stop listening, drop every client connection and session."""
        server = self._server
        if server is None or server.bserver is None or not self.up:
            return
        self.up = False
        await close_binary_server(server)
        # A restarted server has forgotten its sessions; asyncua would keep them for a reconnect (Part 4 §6.7).
        for session in list(getattr(server.iserver, "_external_sessions", {}).values()):
            await _bounded(session.close_session(True), "close_session")
        log.info("opcua.down", endpoint=self.endpoint)

    async def come_up(self) -> None:
        """Restart, second half: listen on the same endpoint again."""
        server = self._server
        if server is None or server.bserver is None or self.up:
            return
        await server.bserver.start()
        self.up = True
        log.info("opcua.up", endpoint=self.endpoint)

    def drop_connections(self) -> int:
        """Close every client connection now (the listener stays up)."""
        server = self._server
        if server is None:
            return 0
        transports = list(server.iserver.asyncio_transports)
        for transport in transports:
            transport.close()
        if transports:
            log.info("opcua.connections_dropped", count=len(transports))
        return len(transports)

    # --- address space ------------------------------------------------------------------------------------------

    async def _build(self, server: Server) -> None:
        containers: dict[str, Node] = {}
        values = self._source.image()
        for point in self.point_map.points:
            if point.opcua is None:
                continue
            nodeid = self._resolve(point.opcua.node_id)
            parent = await self._parent(server, nodeid, containers)
            var = await self._add_variable(parent, nodeid, point, values.get(point.signal_name))
            key = nodeid.to_string()
            self._vars[key] = var
            self._by_signal.setdefault(point.signal_name, []).append(var)

    def _resolve(self, text: str) -> ua.NodeId:
        nodeid = ua.NodeId.from_string(text)
        if text.startswith("nsu="):
            return ua.NodeId(nodeid.Identifier, ua.Int16(self.namespace_index))
        return nodeid

    async def _parent(self, server: Server, nodeid: ua.NodeId, containers: dict[str, Node]) -> Node:
        """The unit object holding a variable, creating Site and Area folders and the unit on the way."""
        parent: Node = server.nodes.objects
        if nodeid.NodeIdType != ua.NodeIdType.String or "/" not in str(nodeid.Identifier):
            return parent
        parts = str(nodeid.Identifier).split("/")[:-1]
        ns = nodeid.NamespaceIndex
        for depth in range(1, len(parts) + 1):
            path = "/".join(parts[:depth])
            if path not in containers:
                bname = ua.QualifiedName(parts[depth - 1], ns)
                child = ua.NodeId(ua.String(path), ns)
                is_unit = depth == len(parts) and depth > 1
                containers[path] = (
                    await parent.add_object(child, bname) if is_unit else await parent.add_folder(child, bname)
                )
            parent = containers[path]
        return parent

    async def _add_variable(self, parent: Node, nodeid: ua.NodeId, point: Point, value: Value | None) -> _Var:
        assert point.opcua is not None
        dt = point.opcua.data_type
        name = str(nodeid.Identifier).rsplit("/", 1)[-1]
        initial = _variant(dt, value if value is not None else 0)
        node = await parent.add_variable(nodeid, ua.QualifiedName(name, nodeid.NamespaceIndex), initial)
        if point.description:
            await node.write_attribute(
                AttributeIds.Description, ua.DataValue(ua.Variant(ua.LocalizedText(point.description)))
            )
        if point.unit:
            await node.add_property(_child(nodeid, "EngineeringUnits"), _STD_EU, eu_information(point.unit))
        if point.range is not None:
            await node.add_property(
                _child(nodeid, "EURange"), _STD_RANGE, ua.Range(Low=point.range[0], High=point.range[1])
            )
        if point.writable:
            await node.set_writable()
        return _Var(point, node, _VARIANT[dt], dt)

    # --- publishing ---------------------------------------------------------------------------------------------

    async def publish(self, values: dict[str, Value], bad: frozenset[str], now: float, *, force: bool = False) -> int:
        """Write the signals that changed since the last publish (or all, ``force``); return nodes written."""
        server = self._server
        if server is None:
            return 0
        stamp = self._stamp(now)
        # The server's clock is the simulation's (its own clock task is disabled), off by the RTU's clock error.
        await server.write_attribute_value(_CURRENT_TIME, ua.DataValue(ua.Variant(stamp, ua.VariantType.DateTime)))
        written = 0
        for signal, vars_ in self._by_signal.items():
            value = values.get(signal)
            if value is None:
                continue
            key = (value, signal in bad)
            if not force and self._last.get(signal) == key:
                continue
            self._last[signal] = key
            for var in vars_:
                nodeid = var.node.nodeid
                if nodeid.to_string() in self._status_faults:
                    continue
                await server.write_attribute_value(nodeid, self._data_value(var, value, key[1], stamp))
                written += 1
        return written

    def _stamp(self, now: float) -> ua.DateTime:
        return ua.DateTime.fromtimestamp(now + self.clock_error_s(), tz=UTC)

    def clock_error_s(self) -> float:
        """How far the RTU's clock is off now: the option plus every ``opcua_clock_offset`` fault acting."""
        faults = getattr(self._source, "faults", {})  # the Simulation's active faults (a bare source has none)
        offsets = [f.spec.offset_s for f in faults.values() if isinstance(f.spec, OpcUaClockOffset)]
        return self.clock_offset_s + sum(offsets)

    def _data_value(self, var: _Var, value: Value, bad: bool, stamp: ua.DateTime) -> ua.DataValue:
        if bad:
            status = ua.StatusCode(ua.UInt32(StatusCodes.BadSensorFailure))
            return ua.DataValue(StatusCode=status, SourceTimestamp=stamp, ServerTimestamp=stamp)
        return ua.DataValue(var.variant_of(value), SourceTimestamp=stamp, ServerTimestamp=stamp)

    def nodes_of(self, points: list[str]) -> list[str]:
        """Node id strings for point names or node ids (all nodes when ``points`` is empty)."""
        if not points:
            return list(self._vars)
        wanted = set(points)
        return [k for k, v in self._vars.items() if k in wanted or v.point.name in wanted]

    async def set_status_faults(self, faults: dict[str, str], now: float) -> None:
        """Make exactly these nodes (node id → Bad status name) read bad; the others go back to their values."""
        server = self._server
        if server is None:
            return
        stamp = self._stamp(now)
        new = {k: ua.StatusCode(ua.UInt32(getattr(StatusCodes, name))) for k, name in faults.items()}
        healed = set(self._status_faults) - set(new)
        self._status_faults = new
        for key, status in new.items():
            nodeid = self._vars[key].node.nodeid
            await server.write_attribute_value(
                nodeid, ua.DataValue(StatusCode=status, SourceTimestamp=stamp, ServerTimestamp=stamp)
            )
        for key in healed:
            self._last.pop(self._vars[key].point.signal_name, None)

    # --- client writes ------------------------------------------------------------------------------------------

    async def _pre_write(self, event: ServerItemCallback, _dispatcher: Any) -> None:
        """Hand each client write of a value to the PLC first; a refusal fails the whole Write service call."""
        if not event.is_external:
            return
        for wv in event.request_params.NodesToWrite:
            var = self._vars.get(wv.NodeId.to_string())
            if var is None or wv.AttributeId != AttributeIds.Value or wv.Value.Value is None:
                continue
            variant = wv.Value.Value
            if variant.VariantType != var.variant:
                continue  # asyncua answers BadTypeMismatch itself
            if not var.point.writable:
                raise _refused(StatusCodes.BadNotWritable)
            try:
                self._source.write(var.point.signal_name, variant.Value)
            except ReadOnlySignal as exc:
                raise _refused(StatusCodes.BadNotWritable) from exc
            except WriteRejected as exc:
                log.info("opcua.write_refused", node=wv.NodeId.to_string(), reason=str(exc))
                raise _refused(StatusCodes.BadOutOfRange) from exc

    async def _post_write(self, event: ServerItemCallback, _dispatcher: Any) -> None:
        """Show what the PLC holds now (its rounding) on every node of the written signals."""
        if not event.is_external:
            return
        for wv in event.request_params.NodesToWrite:
            var = self._vars.get(wv.NodeId.to_string())
            if var is not None:
                self._last.pop(var.point.signal_name, None)
        if self._on_write is not None:
            self._on_write()


# --- stopping -------------------------------------------------------------------------------------------------------


async def close_binary_server(server: Server) -> None:
    """Stop listening, close every client connection (aborted after ``STOP_GRACE_S``), then asyncua's own stop of
    the binary server (its clean-up of the connections, bounded by ``STOP_BOUND_S``). Idempotent."""
    bserver = server.bserver
    if bserver is None:
        return
    listener = bserver._server  # asyncua keeps the asyncio.Server private
    if listener is not None:
        listener.close()  # first: from here on no connection can be accepted
    await _close_connections(server, listener)
    await _bounded(bserver.stop(), "binary server stop")  # nothing left for its wait_closed to wait on


async def _close_connections(server: Server, listener: asyncio.AbstractServer | None) -> None:
    """Close the client connections until none is left: those accepted just before the listener closed too (their
    transport is made a loop turn or two later). Those still open after ``STOP_GRACE_S`` are aborted."""
    transports = server.iserver.asyncio_transports
    deadline = time.monotonic() + STOP_GRACE_S
    turns = 0
    while transports or _active_connections(listener):
        now = time.monotonic()
        if now >= deadline + STOP_BOUND_S:
            left = max(len(transports), _active_connections(listener))
            log.warning("opcua.stop_connections_left", count=left)
            return
        for transport in list(transports):
            if now >= deadline:
                transport.abort()  # unsent data dropped, as a restarting server would
            else:
                transport.close()
        turns += 1
        await asyncio.sleep(0 if turns < 10 else 0.01)


def _active_connections(listener: asyncio.AbstractServer | None) -> int:
    """Connections the asyncio server has made and not yet seen lost (CPython's count, the one ``wait_closed``
    waits on); 0 where the implementation has none."""
    return int(getattr(listener, "_active_count", 0))


async def _bounded(aw: Awaitable[None], what: str) -> None:
    """Await ``aw`` for at most ``STOP_BOUND_S`` (a stop goes on without it, with a warning)."""
    try:
        async with asyncio.timeout(STOP_BOUND_S):
            await aw
    except TimeoutError:
        log.warning("opcua.stop_step_timed_out", step=what, bound_s=STOP_BOUND_S)
