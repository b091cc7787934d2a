"""OPC UA southbound: batched reads or subscriptions, status-code quality, pinned-certificate security."""

from gateway.adapters.opcua.device import OpcUaDevice

__all__ = ["OpcUaDevice"]
