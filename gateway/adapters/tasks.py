"""Moved to ``gateway.tasks`` (the service layer uses it too, and must not import from the adapters).

Kept only so that the device adapters' imports, which another branch rewrites, still resolve; delete once nothing
imports it.
"""

from gateway.tasks import cancel_and_wait, cancellation_kept

__all__ = ["cancel_and_wait", "cancellation_kept"]
