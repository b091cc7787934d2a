"""``gateway-sim`` as a user and a parent process see it: ports printed and in the ready file, the control port,
clean stop on SIGTERM, configuration errors with their dotted paths."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sim_helpers import modbus_client

GATEWAY_SIM = [sys.executable, "-m", "simulators.cli"]


async def _ready(path: Path, proc: asyncio.subprocess.Process, timeout_s: float = 60.0) -> dict[str, object]:
    """The ready file, once written (atomically, once everything listens); the deadline is only against a hang."""
    async with asyncio.timeout(timeout_s):
        while not await asyncio.to_thread(path.exists):
            if proc.returncode is not None:
                raise AssertionError("gateway-sim exited before it was ready")
            await asyncio.sleep(0.05)  # another process's file: nothing to wait on but the file system
    return dict(json.loads(await asyncio.to_thread(path.read_text, encoding="utf-8")))


async def _control(port: int, *lines: str) -> list[dict[str, object]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []
    for line in lines:
        writer.write(line.encode() + b"\n")
        await writer.drain()
        answers.append(json.loads(await reader.readline()))
    writer.close()
    await writer.wait_closed()
    return answers


@pytest.mark.slow
async def test_gateway_sim_runs_serves_obeys_its_control_port_and_stops_on_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    args = ["--modbus-port", "0", "--opcua-port", "0", "--control-port", "0", "--speed", "60"]
    proc = await asyncio.create_subprocess_exec(
        *GATEWAY_SIM,
        *args,
        "--ready-file",
        str(ready),
        "--log-format",
        "json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        ends = await _ready(ready, proc)
        assert ends["pid"] == proc.pid
        port = int(str(ends["modbus_port"]))
        assert port > 0
        assert str(ends["opcua_endpoint"]).endswith("/bs01")
        async with modbus_client(port) as client:
            rr = await client.read_input_registers(13, count=1, device_id=1)  # HB-PLC
            assert not rr.isError()
        answers = await _control(
            int(str(ends["control_port"])), "inject burst flow_lps=6 label=b1", "faults", "hoa P-101 hand", "nonsense"
        )
        assert answers[0] == {"ok": True, "id": "b1"}
        faults = answers[1]["faults"]
        assert isinstance(faults, list)
        assert faults[0]["kind"] == "burst"
        assert answers[2] == {"ok": True}
        assert answers[3]["ok"] is False
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):  # only against a hang
            out_b, err_b = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    out, err = out_b.decode(), err_b.decode()
    lines = out.splitlines()
    assert lines[0] == f"modbus listening on 127.0.0.1:{port}"
    assert lines[1] == f"opcua listening on {ends['opcua_endpoint']}"
    assert lines[2] == f"control listening on 127.0.0.1:{ends['control_port']}"
    assert "Exception" not in err
    events = [json.loads(line)["event"] for line in err.splitlines() if line.startswith("{")]
    assert "sim.fault_injected" in events
    assert "shutdown.requested" in events
    assert events[-1] == "sim.stopped"
    assert not ready.exists()


def test_check_config_reports_bad_fields_with_their_path(tmp_path: Path) -> None:
    bad = tmp_path / "plant.toml"
    bad.write_text("[tank]\ndiameter_m = -1\nfloor_m = 140\ninitial_level_m = 5\nmax_level_m = 8\n", encoding="utf-8")
    result = subprocess.run(
        [*GATEWAY_SIM, "-c", str(bad), "--check-config"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "tank.diameter_m" in result.stderr
    ok = subprocess.run([*GATEWAY_SIM, "--check-config"], capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0
    assert ok.stdout.strip() == "configuration ok"


def test_help_documents_the_options() -> None:
    result = subprocess.run([*GATEWAY_SIM, "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0
    for option in ("--speed", "--ready-file", "--scenario", "--record", "--control-port", "--seed"):
        assert option in result.stdout


def test_a_taken_port_is_a_clean_failure(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        result = subprocess.run(
            [*GATEWAY_SIM, "--modbus-port", str(port), "--no-control", "--log-format", "json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
        )
    assert result.returncode == 1
    assert "gateway-sim:" in result.stderr


async def test_gateway_sim_serves_modbus_rtu_over_tcp_and_on_a_pty_beside_modbus_tcp(tmp_path: Path) -> None:
    from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
    from pymodbus.framer import FramerType

    ready = tmp_path / "ready.json"
    args = ["--modbus-port", "0", "--opcua-port", "0", "--no-control", "--rtu-port", "0", "--rtu-pty"]
    proc = await asyncio.create_subprocess_exec(
        *GATEWAY_SIM,
        *args,
        *("--rtu-baud", "19200", "--ready-file", str(ready), "--log-format", "json"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        ends = await _ready(ready, proc)
        rtu_port, pty = int(str(ends["rtu_port"])), str(ends["rtu_pty"])
        clients = [
            AsyncModbusTcpClient("127.0.0.1", port=rtu_port, framer=FramerType.RTU, timeout=0.5, retries=0),
            AsyncModbusSerialClient(
                pty, framer=FramerType.RTU, baudrate=19200, parity="N", stopbits=2, timeout=0.5, retries=0
            ),
        ]
        for client in clients:
            assert await client.connect()
            try:
                rr = await client.read_input_registers(13, count=1, device_id=1)  # HB-PLC, as over Modbus TCP
                assert not rr.isError()
                silent = client.read_input_registers(13, count=1, device_id=9)  # no unit 9 on the line
                with pytest.raises(Exception, match="No response"):
                    await silent
            finally:
                client.close()
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):  # only against a hang
            out_b, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    lines = out_b.decode().splitlines()
    assert f"modbus listening on 127.0.0.1:{ends['modbus_port']}" in lines
    assert f"modbus rtu over tcp listening on 127.0.0.1:{rtu_port}" in lines
    assert f"modbus rtu on pty {pty}" in lines
