"""Facts about spine surgery: what was done, and how long ago."""

from __future__ import annotations

from cds_service.engine.facts import (
    EvaluationContext,
    Evidence,
    Fact,
    absent,
    evidence_of,
    fact,
)
from cds_service.engine.record import Entry

SPINE_SURGERY_SETS = ("lumbar-discectomy", "lumbar-fusion", "spine-surgery-other")


def surgeries(ctx: EvaluationContext, *vs_ids: str) -> list[Entry]:
    """Completed, dated surgeries of the given kinds, most recent first."""
    found = [e for e, _ in ctx.coded("Procedure", *vs_ids) if ctx.not_future(e.date)]
    return sorted(found, key=lambda e: e.date, reverse=True)


def performed(entry: Entry) -> Evidence:
    """Evidence line for a completed procedure."""
    return evidence_of(entry, f"{entry.label} (completed)", when="performed")


def _surgery_fact(ctx: EvaluationContext, vs_ids: tuple[str, ...], within: str | None) -> Fact:
    found = surgeries(ctx, *vs_ids)
    if within is not None:
        found = [e for e in found if e.date >= ctx.since(within)]
    if not found:
        return absent(procedures=[])
    return Fact("", True, [performed(e) for e in found],
                {"procedures": found, "latest": found[0], "date": found[0].date})


@fact("recent_spine_surgery", """A completed spine surgery (lumbar discectomy, lumbar
      fusion or other spine surgery) within the recent-surgery window (default 90 days).""")
def recent_spine_surgery(ctx: EvaluationContext) -> Fact:
    return _surgery_fact(ctx, SPINE_SURGERY_SETS, "recent_surgery_days")


@fact("recent_lumbar_discectomy", """A completed lumbar discectomy within the
      recent-surgery window (default 90 days).""")
def recent_lumbar_discectomy(ctx: EvaluationContext) -> Fact:
    return _surgery_fact(ctx, ("lumbar-discectomy",), "recent_surgery_days")


@fact("spine_surgery_on_record", "A completed spine surgery of any date.")
def spine_surgery_on_record(ctx: EvaluationContext) -> Fact:
    found = [e for e, _ in ctx.coded("Procedure", *SPINE_SURGERY_SETS)]
    if not found:
        return absent()
    return Fact("", True, [performed(e) for e in found])


@fact("prior_lumbar_discectomy", "A completed lumbar discectomy of any date.")
def prior_lumbar_discectomy(ctx: EvaluationContext) -> Fact:
    return _surgery_fact(ctx, ("lumbar-discectomy",), None)


@fact("lumbar_fusion_over_90_days", """A completed lumbar fusion performed more than the
      fusion-age threshold ago (default 90 days).""")
def lumbar_fusion_over_90_days(ctx: EvaluationContext) -> Fact:
    found = [e for e in surgeries(ctx, "lumbar-fusion") if e.date < ctx.since("fusion_min_days")]
    if not found:
        return absent()
    latest = found[0]
    return Fact("", True, [performed(latest)],
                {"latest": latest, "date": latest.date})
