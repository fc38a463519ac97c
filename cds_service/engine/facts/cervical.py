"""Facts about pain, the cervical spine, and spinal stability."""

from __future__ import annotations

from cds_service.engine.facts import EvaluationContext, Fact, evidence_of, fact


def _conditions(ctx: EvaluationContext, *vs_ids: str, within: str | None = None) -> Fact:
    items = ctx.coded("Condition", *vs_ids) + ctx.coded("Observation", *vs_ids)
    if within is not None:
        since = ctx.since(within)
        items = [(e, i) for e, i in items
                 if e.date is not None and e.date >= since and ctx.not_future(e.date)]
    evidence = [evidence_of(e, when="recorded") for e, _ in items]
    return Fact("", bool(evidence), evidence)


@fact("active_back_pain", """Active back pain: low back pain, chronic back pain,
      postoperative pain, chronic postprocedural pain or post-laminectomy syndrome.""")
def active_back_pain(ctx: EvaluationContext) -> Fact:
    return _conditions(ctx, "back-pain")


@fact("cervical_stenosis_active", "Active cervical spinal stenosis.")
def cervical_stenosis_active(ctx: EvaluationContext) -> Fact:
    return _conditions(ctx, "cervical-stenosis")


@fact("recent_myelopathy_sign", """A myelopathy sign (unsteady gait, hand clumsiness or
      weakness, upper-limb radiculopathy, cervical myelopathy) recorded within the
      myelopathy-sign window (default 90 days).""")
def recent_myelopathy_sign(ctx: EvaluationContext) -> Fact:
    return _conditions(ctx, "myelopathy-sign", within="myelopathy_sign_days")


@fact("spinal_instability_documented", """Documented spinal instability, including
      spondylolisthesis of the lumbar or lumbosacral spine.""")
def spinal_instability_documented(ctx: EvaluationContext) -> Fact:
    return _conditions(ctx, "spinal-instability")


@fact("chronic_axial_pain_with_degeneration", """Chronic axial low back pain together with
      degenerative disc disease (one discogenic-back-pain code records both).""")
def chronic_axial_pain_with_degeneration(ctx: EvaluationContext) -> Fact:
    pain = _conditions(ctx, "chronic-axial-back-pain")
    degeneration = _conditions(ctx, "degenerative-disc-disease")
    holds = pain.holds and degeneration.holds
    evidence = pain.evidence + [e for e in degeneration.evidence if e not in pain.evidence]
    return Fact("", holds, evidence if holds else [])
