"""The time budget of one hook call (``REQUEST_TIME_BUDGET_SECONDS``).

Cooperative: the invocation checks the deadline between its stages, and the FHIR
fetch gets at most what is left. A call out of time is a 503 with
``Retry-After`` (added by the error handler), never a 500 or a hung worker.
"""

from __future__ import annotations

import math
import time

from cds_service.errors import ClientError, Violation

#: Seconds a client is told to wait before trying a call that ran out of time again.
RETRY_AFTER_SECONDS = 5


class Deadline:
    """``seconds`` from ``started`` (a ``time.perf_counter()`` reading, default: now).

    ``None`` or a value <= 0 means no budget.
    """

    def __init__(self, seconds: float | None, started: float | None = None) -> None:
        self.seconds = seconds if seconds is not None and seconds > 0 else None
        self.started = time.perf_counter() if started is None else started

    def remaining(self) -> float:
        if self.seconds is None:
            return math.inf
        return self.started + self.seconds - time.perf_counter()

    def check(self, stage: str) -> None:
        """Raise a 503 when the budget is spent; ``stage`` says what was being done."""
        if self.remaining() <= 0:
            raise ClientError(
                503, "The service could not answer within its time budget; try again later",
                [Violation("", f"the {self.seconds:g} s budget (REQUEST_TIME_BUDGET_SECONDS) "
                               f"ran out while {stage}")])
