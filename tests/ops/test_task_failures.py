"""Real tasks ending unexpectedly, and what an operator sees: the whole gateway on the simulators losing its store
writer (it stops, exit status 70), the uplink on a real broker losing pieces (restarted, or a new session), the
health listener closed under itself (opened again), a poller that cannot run (restarted with back-off while the
loop goes on, and the watchdog goes hungry).

Each checks /healthz over HTTP naming the task, the ``task_failed`` event (against its schema), one ERROR line with
the traceback, the watchdog, and the restart count or the exit status; and holds every task it saw to the policy
documented in docs/supervision.md.
"""

from __future__ import annotations

import asyncio
import random
import re
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from supervision_kit import RecordingNotifier, failure_lines, get, health_server, in_state, task_failed_events

from gateway.adapters.mqtt import Uplink, UplinkIdentity
from gateway.adapters.systemd import Watchdog
from gateway.bootstrap import Gateway, run_gateway
from gateway.cli.status import _get_health, render_status, render_tasks
from gateway.clock import SteppedClock, SystemClock
from gateway.config import load_config
from gateway.config.loop import LoopSettings
from gateway.config.mqtt import MqttSettings
from gateway.domain.messages import OutboxMessage
from gateway.domain.ports import OutboxStats
from gateway.mapek.build import build_control_loop
from gateway.metrics import REGISTRY
from gateway.supervision import EXIT_TASK_FAILED, Supervisor, TaskState
from gateway.testing.configs import booster_station_config, day_clock
from gateway.testing.fakes import InMemoryKnowledgeStore
from gateway.testing.intake import command_intake
from gateway.testing.mosquitto import Mosquitto
from simulators.plant_simulator import PlantSimulator
from tests.loop.fakes import PLC_TAGS, RTU_TAGS, FakeDevice, FakePlant

DOC = Path(__file__).resolve().parents[2] / "docs" / "supervision.md"
GUARD_S = 60  # a hang guard, never a timing assertion


def documented_policies() -> dict[str, str]:
    """``task pattern -> policy`` from the table in docs/supervision.md."""
    rows = re.findall(r"^\| `([^`]+)` \| .*? \| (restart|fail|escalate) \|", DOC.read_text(), flags=re.MULTILINE)
    return dict(rows)


def assert_as_documented(supervisor: Supervisor) -> None:
    documented = documented_policies()
    for name, record in supervisor.tasks.items():
        pattern = next((p for p in documented if re.fullmatch(re.escape(p).replace("<device>", ".+"), name)), None)
        assert pattern is not None, f"task {name} is not in docs/supervision.md"
        assert record.policy.value == documented[pattern], (
            f"{name}: {record.policy.value}, documented {documented[pattern]}"
        )


def _restarts(task: str) -> float:
    return REGISTRY.get_sample_value("gateway_task_restarts_total", {"task": task}) or 0.0


def _boom(conn: sqlite3.Connection) -> None:
    raise RuntimeError("a bug in a maintenance step")


# -- fail: the whole gateway -------------------------------------------------------------------------------------


async def test_the_store_writer_dying_shows_on_healthz_then_stops_the_gateway_with_status_70(tmp_path: Path) -> None:
    clock = day_clock()
    notifier = RecordingNotifier()
    stop = asyncio.Event()
    started: asyncio.Future[Gateway] = asyncio.get_running_loop().create_future()
    seen: dict[str, Any] = {}

    async def on_failure(gw: Gateway) -> None:  # the gateway as it failed, before it stops
        assert gw.http is not None
        seen["healthz"] = await get(gw.http.port, "/healthz")
        seen["metrics"] = await get(gw.http.port, "/metrics")
        seen["pings"] = notifier.pings()

    with capture_logs() as logs:
        async with PlantSimulator(clock=clock, seed=5) as sim:
            cfg = booster_station_config(
                tmp_path,
                gateway_id="edge-sv",
                modbus_port=sim.modbus_port,
                opcua_endpoint=sim.opcua_endpoint,
                metrics_port=0,
            )
            run = asyncio.create_task(
                run_gateway(
                    load_config(cfg),
                    stop,
                    clock=clock,
                    notifier=notifier,
                    on_started=started.set_result,
                    on_failure=on_failure,
                ),
                name="gateway",
            )
            async with asyncio.timeout(GUARD_S):
                gw = await started
                await gw.ready.wait()
                await notifier.pinged.wait()  # the loop progresses and feeds the watchdog
            assert_as_documented(gw.supervisor)
            # The seam: a maintenance step that raises what the writer does not expect kills its task.
            poison = asyncio.create_task(gw.store._writer.run_maintenance(_boom, name="boom"))
            async with asyncio.timeout(GUARD_S):
                code = await run
            poison.cancel()
    assert code == EXIT_TASK_FAILED
    assert not stop.is_set()  # nobody asked it to stop

    status, health = seen["healthz"]
    assert status == 503
    assert health["checks"]["tasks_down"] == ["store-writer"]
    assert health["checks"]["tasks"]["store-writer"]["state"] == "failed"
    assert "a bug in a maintenance step" in health["checks"]["tasks"]["store-writer"]["last_error"]
    assert health["checks"]["tasks"]["loop.cycle"]["state"] == "running"
    assert 'gateway_task_up{task="store-writer"} 0.0' in seen["metrics"][1]
    assert "DOWN: store-writer" in render_tasks("the test", health)[0]

    assert notifier.pings() == seen["pings"]  # not fed once the writer had died
    assert "STATUS=stopping: task failed: store-writer" in notifier.sent
    assert notifier.sent[-1] == "STOPPING=1"

    [line] = failure_lines(logs, "store-writer")
    assert (line["log_level"], line["policy"], line["action"]) == ("error", "fail", "exit")
    assert isinstance(line["exc_info"], RuntimeError)
    [stopped] = [e for e in logs if e["event"] == "gateway.stopped"]
    assert stopped["failed_tasks"] == ["store-writer"]

    with sqlite3.connect(tmp_path / "gw.db") as db:
        bodies = [b for (b,) in db.execute("SELECT body FROM outbox WHERE stream = 'events'")]
        report = render_status(db, now=time.time())
    [event] = task_failed_events(bodies)  # written past the dead writer
    assert (event["task"], event["policy"], event["severity"]) == ("store-writer", "fail", "critical")
    assert "store-writer" in report
    assert "the process exited" in report


# -- restart and escalate: the uplink on a real broker ------------------------------------------------------------


class BrokenOnce(InMemoryKnowledgeStore):
    """The outbox with a bug in ``stats`` and one in ``fetch_unsent``, each hit once."""

    def __init__(self) -> None:
        super().__init__(clock=SystemClock())
        self.broken = {"stats", "fetch_unsent"}

    def _hit(self, what: str) -> None:
        if what in self.broken:
            self.broken.discard(what)
            raise RuntimeError(f"a bug in {what}")

    async def stats(self) -> OutboxStats:
        self._hit("stats")
        return await super().stats()

    async def fetch_unsent(
        self, *, limit: int, after_row_id: int = 0, max_priority: int | None = None
    ) -> list[OutboxMessage]:
        self._hit("fetch_unsent")
        return await super().fetch_unsent(limit=limit, after_row_id=after_row_id, max_priority=max_priority)


def _mqtt(port: int) -> MqttSettings:
    return MqttSettings.model_validate(
        {
            "host": "127.0.0.1",
            "port": port,
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.5,
            "poll_interval_s": 0.02,
            "shutdown_timeout_s": 3.0,
            "commands": {"enabled": True},
        }
    )


async def test_uplink_pieces_that_fail_are_restarted_or_start_a_new_session_and_are_counted(tmp_path: Path) -> None:
    clock = SteppedClock()  # the supervisor's back-off only; the uplink runs in real time
    supervisor = Supervisor(clock=clock, rng=random.Random(2))
    store = BrokenOnce()
    supervisor.record_events_with(store.record_event)
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    before = {task: _restarts(task) for task in ("uplink.stats", "uplink.publish")}
    settings = _mqtt(broker.port)
    uplink = Uplink(
        settings=settings,
        identity=UplinkIdentity(site="bs01", gateway="edge-1", client_id="gw-bs01-edge-1", config_hash="cafe"),
        outbox=store,
        intake=command_intake(settings.commands, store=store, handler=None, clock=SystemClock()),
        clock=SystemClock(),
    )
    try:
        with capture_logs() as logs, supervisor.active():
            health = health_server(supervisor)
            async with health, uplink, asyncio.timeout(GUARD_S):
                await supervisor.wait_until(in_state("uplink.stats", TaskState.RESTARTING))
                status, doc = await get(health.port, "/healthz")
                assert status == 503
                assert doc["checks"]["tasks_down"] == ["uplink.stats"]

                await clock.advance(1.0)  # past the first back-off (at most 0.5 s)
                await supervisor.wait_until(in_state("uplink.stats", TaskState.RUNNING))
                # fetch_unsent broke the first session's publisher: a second session publishes again
                await supervisor.wait_until(
                    lambda s: (
                        "uplink.publish" in s.tasks
                        and s.tasks["uplink.publish"].restarts == 1
                        and s.tasks["uplink.publish"].state is TaskState.RUNNING
                    )
                )
                await uplink.wait_connected()
                assert uplink.connections == 2
                status, doc = await get(health.port, "/healthz")
                assert status == 200, doc
                assert_as_documented(supervisor)
                assert {"uplink.connection", "uplink.acks", "uplink.cmd-intake", "uplink.cmd-worker"} <= set(
                    doc["checks"]["tasks"]
                )
    finally:
        broker.stop()
    assert _restarts("uplink.stats") - before["uplink.stats"] == 1
    assert _restarts("uplink.publish") - before["uplink.publish"] == 1
    events = task_failed_events([m.body for m in store.messages()])
    assert sorted((e["task"], e["policy"]) for e in events) == [
        ("uplink.publish", "escalate"),
        ("uplink.stats", "restart"),
    ]
    for task, error in (("uplink.stats", "a bug in stats"), ("uplink.publish", "a bug in fetch_unsent")):
        [line] = failure_lines(logs, task)
        assert line["log_level"] == "error"
        assert str(line["exc_info"]) == error


# -- restart: the health listener ---------------------------------------------------------------------------------


async def test_the_health_listener_closed_under_itself_is_opened_again_on_its_port() -> None:
    clock = SteppedClock()
    supervisor = Supervisor(clock=clock, rng=random.Random(3))
    store = InMemoryKnowledgeStore(clock=clock)
    supervisor.record_events_with(store.record_event)
    before = _restarts("http")
    with capture_logs() as logs, supervisor.active():
        health = health_server(supervisor)
        async with health, asyncio.timeout(GUARD_S):
            port = health.port
            assert (await get(port, "/healthz"))[0] == 200
            health._server.close()  # the seam: its listener closed by someone else; serve_forever leaks a cancel
            await supervisor.wait_until(in_state("http", TaskState.RESTARTING))
            with pytest.raises(ConnectionRefusedError):
                await get(port, "/healthz")
            await clock.advance(1.0)
            await supervisor.wait_until(in_state("http", TaskState.RUNNING))
            status, doc = await get(port, "/healthz")
            assert status == 200
            assert doc["checks"]["tasks"]["http"]["restarts"] == 1
            assert "cancelled by something it awaited" in doc["checks"]["tasks"]["http"]["last_error"]
            # ``gateway status`` asks the same endpoint (blocking, as a CLI does: from a thread here)
            lines = render_tasks("it", await asyncio.to_thread(_get_health, "127.0.0.1", port))
            assert lines[0] == "supervised tasks (1, from it): all up"
            assert lines[1].split()[:5] == ["http", "running", "restart", "restarts", "1"]
    assert _restarts("http") - before == 1
    [event] = task_failed_events([m.body for m in store.messages()])
    assert (event["task"], event["policy"]) == ("http", "restart")
    [line] = failure_lines(logs, "http")
    assert isinstance(line["exc_info"], asyncio.CancelledError)
    assert_as_documented(supervisor)


# -- restart: a poller, while the loop goes on --------------------------------------------------------------------


async def test_a_poller_that_cannot_run_is_restarted_with_capped_backoff_while_the_watchdog_goes_hungry() -> None:
    plant = FakePlant()
    clock = SteppedClock(start=plant.now)
    store = InMemoryKnowledgeStore(clock=clock, uplink_enabled=False)
    supervisor = Supervisor(clock=clock, rng=random.Random(4))
    supervisor.record_events_with(store.record_event)
    notifier = RecordingNotifier()
    watchdog = Watchdog(notifier, healthy=supervisor.healthy)
    devices = {"pump-plc": FakeDevice("pump-plc", plant, PLC_TAGS), "tank-rtu": FakeDevice("tank-rtu", plant, RTU_TAGS)}
    loop = build_control_loop(
        settings=LoopSettings(),
        clock=clock,
        devices=devices,
        store=store,
        # The seam: a poll interval the scheduler refuses, so the RTU's poller raises each time it starts.
        poll_intervals_s={"pump-plc": 1.0, "tank-rtu": 0.0},
        stale_after_s={"pump-plc": 5.0, "tank-rtu": 5.0},
        on_progress=watchdog.loop_progressed,
    )
    stop = asyncio.Event()
    before = _restarts("monitor[tank-rtu]")
    with capture_logs() as logs, supervisor.active():
        health = health_server(supervisor)
        async with health, asyncio.timeout(GUARD_S):
            run = asyncio.create_task(loop.run(stop), name="control-loop")
            await supervisor.wait_until(in_state("monitor[tank-rtu]", TaskState.RESTARTING))
            for _ in range(40):  # 40 s of loop time, one second at a time
                await clock.advance(1.0)
            status, doc = await get(health.port, "/healthz")
            cycles = loop.health().cycles
            stop.set()  # ends the back-off at once: no clock step needed to stop
            await run
    assert cycles > 10  # the loop went on (failing safe: the tank level is missing)
    assert notifier.pings() == 0  # ... and never fed the watchdog while the poller was down
    assert status == 503
    assert doc["checks"]["tasks_down"] == ["monitor[tank-rtu]"]
    assert doc["checks"]["tasks"]["monitor[pump-plc]"]["state"] == "running"
    record = supervisor.tasks["monitor[tank-rtu]"]
    assert record.restarts == _restarts("monitor[tank-rtu]") - before >= 6
    waits = [e["retry_in_s"] for e in logs if e.get("task") == "monitor[tank-rtu]" and "retry_in_s" in e]
    _assert_capped_doubling(waits)  # every wait, from the failure lines (ERROR, then DEBUG)
    [event] = task_failed_events([m.body for m in store.messages()])  # one run of failures, one event
    assert event["task"] == "monitor[tank-rtu]"
    [line] = failure_lines(logs, "monitor[tank-rtu]")
    assert isinstance(line["exc_info"], ValueError)
    assert_as_documented(supervisor)


def _assert_capped_doubling(backoffs: Sequence[float]) -> None:
    """Each wait within [d/2, d] of d = min(10, 0.5 · 2^(n-1)), and the cap reached."""
    for n, wait in enumerate(backoffs, start=1):
        ceiling = min(10.0, 0.5 * 2 ** (n - 1))
        assert ceiling / 2 - 1e-3 <= wait <= ceiling + 1e-3, (n, wait, backoffs)  # logged to the millisecond
    assert len(backoffs) > 6
    assert backoffs[-1] >= 5.0, backoffs
