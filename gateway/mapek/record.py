"""Recording: what the loop concluded goes to the knowledge store (symptoms, decisions, pump asset states), with the
metrics and the log lines that go with it.

A plan without commands is recorded only when its family's code changes (a steady NO_ACTION is not a decision
worth a row); asset states only when a pump's running or mode changes. The memory of what was last recorded for
both is kept here.
"""

from __future__ import annotations

from gateway.domain.model import Decision, Plan, PlanCode, Reading
from gateway.domain.ports import AssetState, KnowledgeStore
from gateway.domain.snapshot import PlantSnapshot, good, usable, value
from gateway.logging import get_logger
from gateway.mapek.analyze import Analysis
from gateway.metrics import PLANS_CHOSEN, SYMPTOMS_OPEN, SYMPTOMS_RAISED

log = get_logger("gateway.mapek.record")

_QUIET_CODES = frozenset({PlanCode.NO_ACTION})


class Recorder:
    """Writes the loop's symptoms, decisions and asset states through the store port."""

    def __init__(self, *, store: KnowledgeStore) -> None:
        self._store = store
        self._last_codes: dict[str, str] = {}  # plan family → last code, to record changes
        self._assets: dict[str, tuple[bool, bool]] = {}  # pump → (running, in auto) last recorded

    def worth_recording(self, family: str, plan: Plan) -> bool:
        """A plan with commands always; one without only when its family's code changed (and not NO_ACTION)."""
        last = self._last_codes.get(family)
        self._last_codes[family] = plan.code.value
        return bool(plan.commands) or not (plan.code.value == last or plan.code in _QUIET_CODES)

    def forget(self, family: str) -> None:
        """The family had no plan this cycle: its next plan is a new decision whatever its code."""
        self._last_codes.pop(family, None)

    async def decision(self, decision: Decision) -> None:
        PLANS_CHOSEN.labels(code=decision.plan.code.value).inc()
        await self._store.record_decision(decision)
        if decision.origin != "remote":
            log.info(
                "loop.decision",
                plan=decision.plan.code.value,
                reason=decision.plan.reason,
                commands=len(decision.outcomes),
            )

    async def symptoms(self, analysis: Analysis) -> None:
        for s in analysis.raised:
            SYMPTOMS_RAISED.labels(code=s.code.value).inc()
            SYMPTOMS_OPEN.labels(code=s.code.value).inc()
            log.info("loop.symptom_raised", code=s.code.value, subject=s.subject, detail=s.detail)
            await self._store.record_symptom(s, raised=True, at=analysis.at)
        for s in analysis.cleared:
            SYMPTOMS_OPEN.labels(code=s.code.value).dec()
            log.info("loop.symptom_cleared", code=s.code.value, subject=s.subject)
            await self._store.record_symptom(s, raised=False, at=analysis.at)

    async def assets(self, snapshot: PlantSnapshot) -> None:
        """Pump asset state, on change of running or mode (the store upserts it)."""
        for p in snapshot.pumps:
            if not (good(p.running) and good(p.auto_remote)):
                continue
            now_state = (p.is_running, p.in_auto)
            if self._assets.get(p.name) == now_state:
                continue
            self._assets[p.name] = now_state
            mode = "auto" if p.in_auto else "local"
            asset = AssetState(p.name, p.hours, _int_of(p.starts), mode, snapshot.at, p.is_running)
            await self._store.record_asset_state(asset)


def _int_of(r: Reading | None) -> int:
    return int(value(r, 0.0)) if usable(r) else 0
