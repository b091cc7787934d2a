"""The read planner: merge by function code within the size and gap limits, never split a tag."""

from __future__ import annotations

import pytest

from gateway.adapters.modbus.planner import PlanLimits, ReadRequest, describe_plan, plan_reads, split_at_gaps
from gateway.cli.check_config import summary
from gateway.config import load_config
from gateway.config.devices import ModbusDeviceSettings
from gateway.domain.errors import ConfigError
from gateway.domain.model import DataType, ModbusTable
from gateway.paths import bundled_config_dir
from tests.drivers.conftest import mtag

HR, IR, CO, DI = (
    ModbusTable.HOLDING_REGISTER,
    ModbusTable.INPUT_REGISTER,
    ModbusTable.COIL,
    ModbusTable.DISCRETE_INPUT,
)


def spans(requests: tuple[ReadRequest, ...]) -> list[tuple[int, int, int]]:
    return [(r.function_code, r.address, r.count) for r in requests]


def test_the_pump_plc_point_map_takes_six_requests_instead_of_56() -> None:
    loaded = load_config(bundled_config_dir() / "gateway.toml")
    device = loaded.settings.device("pump-plc")
    assert isinstance(device, ModbusDeviceSettings)
    tags = loaded.settings.tags_of("pump-plc")
    merged = plan_reads(tags, limits=PlanLimits.of(device))
    assert len(tags) == 56
    assert spans(merged.requests) == [(1, 0, 9), (2, 0, 18), (3, 3, 19), (4, 0, 32), (4, 100, 24), (4, 200, 8)]
    assert merged.tag_count == 56
    assert len(plan_reads(tags, mode="per_tag").requests) == 56


def test_gaps_up_to_the_limit_are_bridged_and_larger_ones_are_not() -> None:
    tags = [mtag("A", HR, 0), mtag("B", HR, 5), mtag("C", HR, 11)]  # gaps of 4 and 5 unused registers
    assert spans(plan_reads(tags, limits=PlanLimits(max_gap=5)).requests) == [(3, 0, 12)]
    assert spans(plan_reads(tags, limits=PlanLimits(max_gap=4)).requests) == [(3, 0, 6), (3, 11, 1)]
    assert spans(plan_reads(tags, limits=PlanLimits(max_gap=0)).requests) == [(3, 0, 1), (3, 5, 1), (3, 11, 1)]


def test_tables_are_never_merged_with_each_other() -> None:
    tags = [mtag("H", HR, 0), mtag("I", IR, 1), mtag("C", CO, 0, DataType.BOOL), mtag("D", DI, 0, DataType.BOOL)]
    assert spans(plan_reads(tags).requests) == [(1, 0, 1), (2, 0, 1), (3, 0, 1), (4, 1, 1)]


def test_125_registers_per_request_and_a_tag_is_never_split() -> None:
    tags = [mtag(f"R{a}", HR, a) for a in range(123)] + [mtag("F64", HR, 123, DataType.FLOAT64)]
    plan = plan_reads(tags)
    assert spans(plan.requests) == [(3, 0, 123), (3, 123, 4)]  # 127 registers would exceed 125
    assert all(r.count <= 125 for r in plan.requests)


def test_2000_bits_per_request() -> None:
    tags = [mtag(f"C{a}", CO, a, DataType.BOOL) for a in range(0, 4100, 10)]
    plan = plan_reads(tags)
    assert [r.count for r in plan.requests] == [1991, 1991, 91]
    assert plan.tag_count == len(tags)


def test_bits_of_one_register_share_it() -> None:
    tags = [mtag(f"B{b}", IR, 18, DataType.BOOL, bit=b) for b in range(4)] + [mtag("W", IR, 19, DataType.INT32)]
    assert spans(plan_reads(tags).requests) == [(4, 18, 3)]


def test_a_tag_larger_than_the_request_limit_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="F64"):
        plan_reads([mtag("F64", HR, 0, DataType.FLOAT64)], limits=PlanLimits(max_registers=2))


def test_split_at_gaps_keeps_contiguous_runs() -> None:
    merged = plan_reads([mtag("A", HR, 0), mtag("B", HR, 1, DataType.FLOAT32), mtag("C", HR, 9)]).requests[0]
    assert merged.unused == 6
    assert [(r.address, r.count) for r in split_at_gaps(merged)] == [(0, 3), (9, 1)]


def test_describe_plan_and_check_config_verbose_print_the_plan() -> None:
    loaded = load_config(bundled_config_dir() / "gateway.toml")
    device = loaded.settings.device("pump-plc")
    assert isinstance(device, ModbusDeviceSettings)
    lines = describe_plan(device, loaded.settings.tags_of("pump-plc"))
    assert lines[0].startswith("read plan: 6 requests per poll for 56 tags (one request per tag would be 56")
    assert "  FC04 input_register 100-123 (24 registers, 8 unused) -> 8 tags" in lines
    text = summary(loaded, verbose=True)
    assert "FC01 coil 0-8 (9 bits, 5 unused) -> 4 tags" in text
    assert "read plan: batched Read service calls for 12 nodes" in text
