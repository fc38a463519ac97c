"""What the service keeps of each hook call, written before the response is sent.

After the rules have run: the suppressed cards are dropped (``suppression``), the
cards shown are remembered, and an audit record is written (unless AUDIT is off),
all in one committed transaction. The audit record names the call (hookInstance,
service, hook, time, status, duration) and the rules that fired and were held
back; nothing about the patient.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta

from cds_service.invocation import Outcome
from cds_service.storage import AuditRecord, Storage
from cds_service.suppression import Suppression, load_secret

#: Feedback that arrives later than this after its card cannot suppress it.
ISSUED_CARD_RETENTION = timedelta(days=7)


def _text(request: object, name: str, limit: int) -> str | None:
    value = request.get(name) if isinstance(request, dict) else None
    return value[:limit] if isinstance(value, str) else None


class InvocationHistory:
    def __init__(self, storage: Storage, settings: dict, instance_path: str) -> None:
        self.storage = storage
        self.audit = settings["AUDIT"]
        self.suppression = Suppression(
            storage, load_secret(settings["PATIENT_HASH_SECRET"], instance_path),
            settings["SUPPRESSION_WINDOW_HOURS"])
        storage.forget_issued_cards(storage.clock() - ISSUED_CARD_RETENTION)

    def _audit_record(self, service_id: str, request: object, status: int,
                      outcome: Outcome | None, duration_ms: float) -> AuditRecord | None:
        if not self.audit:
            return None
        return AuditRecord(
            hook_instance=_text(request, "hookInstance", 200), service_id=service_id,
            hook=_text(request, "hook", 100), answered_at=self.storage.clock(), status=status,
            rules_fired=json.dumps(outcome.rule_ids if outcome else []),
            rules_suppressed=json.dumps(outcome.suppressed if outcome else []),
            duration_ms=round(duration_ms, 3))

    def settle(self, service_id: str, request: dict, outcome: Outcome) -> None:
        """Apply suppression to ``outcome`` and commit what is kept of the call."""
        started = time.perf_counter()
        issued = self.suppression.screen(service_id, str(request["context"]["patientId"]),
                                         outcome)
        duration = outcome.duration_ms + (time.perf_counter() - started) * 1000
        self.storage.record_invocation(
            self._audit_record(service_id, request, 200, outcome, duration), issued)

    def record_failure(self, service_id: str, request: object, status: int,
                       started: float) -> None:
        """The audit record of a call answered with an error (``started``: perf_counter)."""
        audit = self._audit_record(service_id, request, status, None,
                                   (time.perf_counter() - started) * 1000)
        if audit is not None:
            self.storage.record_invocation(audit, [])
