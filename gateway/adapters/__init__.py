"""Adapters: Modbus TCP, OPC UA, SQLite and MQTT behind the domain's ports."""
