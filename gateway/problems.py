"""What is wrong with the running gateway now, as the uplink's health lane reports it on the retained state topic.

Read from the parts' own cheap, I/O-free health views (the store's ``health()``, each device's ``health``, the
loop's ``health()``, the supervisor's registry), so that it can be asked every second and whenever the store's
health changes, and answers even while the store cannot write.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.domain.messages import HealthKind, HealthProblem
from gateway.domain.ports import FieldDevice, KnowledgeStore
from gateway.mapek.loop import ControlLoop
from gateway.supervision import Supervisor


def gateway_problems(
    *, store: KnowledgeStore, devices: Mapping[str, FieldDevice], loop: ControlLoop, supervisor: Supervisor
) -> list[HealthProblem]:
    """Store not committing, devices whose last operation failed, the loop in fail-safe, supervised tasks down."""
    problems = [
        HealthProblem(HealthKind.DEVICE_LOST, name, device.health.last_error)
        for name, device in devices.items()
        if device.health.state == "failing"
    ]
    problems += [
        HealthProblem(HealthKind.TASK_FAILED, task, supervisor.tasks[task].last_error) for task in supervisor.down()
    ]
    store_health = store.health()
    if not store_health.healthy:
        problems.append(HealthProblem(HealthKind.STORE_UNHEALTHY, "store", store_health.reason or "not committing"))
    failsafe = loop.health().failsafe_reason
    if failsafe:
        problems.append(HealthProblem(HealthKind.LOOP_FAILSAFE, "loop", failsafe))
    return problems
