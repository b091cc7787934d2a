"""Bundled simulators of booster station BS-01: plant model and simulated PLCs (Modbus TCP, OPC UA)."""
