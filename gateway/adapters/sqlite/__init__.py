"""The knowledge store on SQLite: schema and migrations, the batching writer, retention and read queries."""

from gateway.adapters.sqlite.connection import open_readonly
from gateway.adapters.sqlite.retention import RetentionReport
from gateway.adapters.sqlite.schema import SCHEMA_VERSION
from gateway.adapters.sqlite.store import SqliteKnowledgeStore

__all__ = ["SCHEMA_VERSION", "RetentionReport", "SqliteKnowledgeStore", "open_readonly"]
