"""Modbus southbound (TCP, and RTU on serial lines or over TCP): read planner, register codec, the device adapter."""

from gateway.adapters.modbus.device import ModbusDevice
from gateway.adapters.modbus.planner import PlanLimits, ReadPlan, ReadRequest, describe_plan, plan_reads

__all__ = ["ModbusDevice", "PlanLimits", "ReadPlan", "ReadRequest", "describe_plan", "plan_reads"]
