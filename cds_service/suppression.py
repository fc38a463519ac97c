"""Alert fatigue: a card a clinician overrode is not shown again for the same
patient, rule and reason within SUPPRESSION_WINDOW_HOURS, unless it is critical.

The *reason* of a card is what fired it: the FHIR references of the facts listed
in its detail (for an order rule, the draft order among them). A card fired again
by the same facts stays hidden; one fired by new facts (another Observation, a new
draft order) is shown, because it tells the clinician something they have not yet
dismissed. The override reason code chosen is recorded, but does not change what
is suppressed. The window runs from the moment the override reached the service,
on the real clock, never EVALUATION_TIME. A window of 0 turns suppression off
(no cards are remembered).

Storage never sees a patient id: a patient is HMAC-SHA256(secret, patientId), and
a reason an HMAC of its references. The secret is PATIENT_HASH_SECRET, or else a
random one created once in the instance folder (mode 0600) that every worker
using that folder reads. Hosts that share one database must share
PATIENT_HASH_SECRET, or they will not recognise each other's patients.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path

from cds_service.config import ConfigError
from cds_service.invocation import Outcome
from cds_service.storage import IssuedCardRecord, Storage

SECRET_FILE = "patient-hash-secret"


def _create_once(path: Path) -> None:
    """Write a random secret to ``path`` unless another process does so first.

    The secret is written to a private temporary file and hard-linked into place,
    so that ``path`` appears complete or not at all, and the first one stays.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another worker was first: its secret is the one
    finally:
        temporary.unlink(missing_ok=True)


def load_secret(configured: str | None, instance_path: str) -> bytes:
    """PATIENT_HASH_SECRET, or the instance folder's secret file (created when absent)."""
    if configured is not None:
        if not configured:
            raise ConfigError("PATIENT_HASH_SECRET must not be empty")
        return configured.encode()
    path = Path(instance_path) / SECRET_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            _create_once(path)
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"cannot keep the patient hash secret in {path} ({exc.strerror}): "
                          "set PATIENT_HASH_SECRET, or make the instance folder writable") from None
    if not secret:
        raise ConfigError(f"{path} is empty: delete it to have a new secret created")
    return secret


class Suppression:
    """Decides which cards of an invocation are held back, and what to remember of the rest."""

    def __init__(self, storage: Storage, secret: bytes, window_hours: float) -> None:
        self.storage = storage
        self._secret = secret
        self.window = timedelta(hours=window_hours) if window_hours > 0 else None

    def patient_key(self, patient_id: str) -> str:
        return hmac.new(self._secret, patient_id.encode(), hashlib.sha256).hexdigest()

    def reason(self, references: Iterable[str]) -> str:
        """The fingerprint of a card's reason: its FHIR references, in any order."""
        joined = "\n".join(sorted(set(references)))
        return hmac.new(self._secret, joined.encode(), hashlib.sha256).hexdigest()

    def screen(self, service_id: str, patient_id: str,
               outcome: Outcome) -> list[IssuedCardRecord]:
        """Drop the suppressed cards from ``outcome`` (their rule ids go to
        ``outcome.suppressed``) and return the shown cards, to be stored as issued.

        At most one indexed query, and none when every card is critical.
        """
        if self.window is None or not outcome.cards:
            return []
        now = self.storage.clock()
        key = self.patient_key(patient_id)
        reasons = {card.uuid: self.reason(outcome.references.get(card.uuid, ()))
                   for card in outcome.cards}
        candidates = [card for card in outcome.cards if card.indicator != "critical"]
        overridden = self.storage.overrides_since(key, now - self.window) if candidates else set()
        held = {card.uuid for card in candidates
                if (card.rule_id, reasons[card.uuid]) in overridden}
        outcome.suppressed = [card.rule_id for card in outcome.cards if card.uuid in held]
        outcome.cards = [card for card in outcome.cards if card.uuid not in held]
        return [IssuedCardRecord(card_uuid=card.uuid, service_id=service_id,
                                 rule_id=card.rule_id, indicator=card.indicator,
                                 patient_key=key, reason=reasons[card.uuid], issued_at=now)
                for card in outcome.cards]
