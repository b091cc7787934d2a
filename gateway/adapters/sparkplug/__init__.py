"""Sparkplug B 3.0 northbound: the gateway as an Edge Node, each field device a Device (docs in README.md,
"Sparkplug B").

Payloads are encoded with ``protobuf`` from Eclipse Tahu's ``sparkplug_b.proto`` (copied unchanged from
eclipse-tahu/tahu ``sparkplug_b/sparkplug_b.proto``). The generated ``sparkplug_b_pb2.py`` and its ``.pyi`` are
committed; after changing the proto or the protobuf major version, regenerate both with::

    cd gateway/adapters/sparkplug && python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. sparkplug_b.proto
"""

from gateway.adapters.sparkplug.factory import build_sparkplug_node
from gateway.adapters.sparkplug.node import SparkplugNode

__all__ = ["SparkplugNode", "build_sparkplug_node"]
