"""Facts about neurological deficits: foot drop, cauda equina, radiculopathy."""

from __future__ import annotations

import re

from cds_service.engine.facts import EvaluationContext, Fact, absent, evidence_of, fact
from cds_service.engine.record import Entry, concept_text
from cds_service.engine.valuesets import CodeInfo

_SIDE_TEXT = (
    (re.compile(r"\bbilateral|\bboth\b|right and left|left and right", re.I), "bilateral"),
    (re.compile(r"\bleft\b", re.I), "left"),
    (re.compile(r"\bright\b", re.I), "right"),
)
_KINDS = (("cauda-equina-syndrome", "cauda equina syndrome"), ("foot-drop", "foot drop"),
          ("lower-limb-paresis", "lower-limb weakness"))


def _body_sites(entry: Entry) -> list[dict]:
    site = entry.resource.get("bodySite")
    if isinstance(site, dict):
        return [site]
    return [s for s in site or () if isinstance(s, dict)]


def side_of(ctx: EvaluationContext, entry: Entry, info: CodeInfo | None) -> str | None:
    """left, right, bilateral, or None when the record does not say."""
    if info is not None and info.laterality:
        return info.laterality
    for site in _body_sites(entry):
        for coding in site.get("coding") or ():
            if not isinstance(coding, dict):
                continue
            for side in ("bilateral", "left", "right"):
                if ctx.valuesets[f"laterality-{side}"].lookup(coding.get("system"),
                                                              coding.get("code")):
                    return side
        for pattern, side in _SIDE_TEXT:
            if pattern.search(concept_text(site)):
                return side
    for pattern, side in _SIDE_TEXT:
        if pattern.search(entry.text):
            return side
    return None


def combine_sides(sides: list[str | None]) -> str | None:
    known = {s for s in sides if s}
    if "bilateral" in known or {"left", "right"} <= known:
        return "bilateral"
    return known.pop() if known else None


def _deficits(ctx: EvaluationContext, vs_ids: tuple[str, ...], window: str):
    since = ctx.since(window)
    for rtype in ("Condition", "Observation"):
        for entry, info in ctx.coded(rtype, *vs_ids):
            if entry.date is not None and since <= entry.date and ctx.not_future(entry.date):
                yield entry, info


@fact("acute_motor_deficit", """Foot drop, cauda equina syndrome or another lower-limb
      motor deficit (paresis, monoplegia) with onset within the acute-deficit window
      (default 14 days). Confirmed or suspected; resolved, refuted, entered-in-error and
      undated records do not count. Remembers the side and whether it is an emergency
      (bilateral deficit or cauda equina syndrome).""")
def acute_motor_deficit(ctx: EvaluationContext) -> Fact:
    items = []
    for entry, info in _deficits(ctx, ("cauda-equina-syndrome", "foot-drop",
                                       "lower-limb-paresis"), "acute_deficit_days"):
        kind = next(label for vs_id, label in _KINDS if ctx.valuesets[vs_id].first_match(
            entry.codings))
        items.append((entry, kind, side_of(ctx, entry, info)))
    if not items:
        return absent()
    side = combine_sides([s for _, _, s in items])
    kinds = sorted({k for _, k, _ in items})
    ces = "cauda equina syndrome" in kinds
    evidence = [evidence_of(e, f"{k.capitalize()}{f' ({s})' if s else ''}", when="onset")
                for e, k, s in items]
    return Fact("", True, evidence, {
        "side": side, "kinds": kinds, "cauda_equina": ces,
        "emergency": ces or side == "bilateral",
        "onset": min(e.date for e, _, _ in items),
        "suspected_only": all(ev.suspected for ev in evidence),
        "description": _describe(kinds, side),
    })


def _describe(kinds: list[str], side: str | None) -> str:
    motor = [k for k in kinds if k != "cauda equina syndrome"]
    parts = []
    if motor:
        prefix = {"bilateral": "bilateral ", "left": "left ", "right": "right "}.get(side, "")
        parts.append(prefix + " and ".join(motor))
    if "cauda equina syndrome" in kinds:
        parts.append("cauda equina syndrome")
    return " with ".join(parts)


@fact("new_neurological_deficit", """A neurological deficit (foot drop, cauda equina
      syndrome, limb paresis or weakness, peroneal palsy) recorded within the
      new-deficit window (default 30 days).""")
def new_neurological_deficit(ctx: EvaluationContext) -> Fact:
    items = list(_deficits(ctx, ("neurological-deficit",), "new_deficit_days"))
    if not items:
        return absent()
    return Fact("", True, [evidence_of(e, when="onset") for e, _ in items])


@fact("active_radicular_or_motor_symptoms", """An active radiculopathy, sciatica, foot
      drop, lower-limb motor deficit or cauda equina syndrome of any date, or a disc
      herniation whose own code states radiculopathy (e.g. ICD-10-CM M51.16).""")
def active_radicular_or_motor_symptoms(ctx: EvaluationContext) -> Fact:
    items = ctx.coded("Condition", "radiculopathy", "neurological-deficit")
    items += ctx.coded("Observation", "radiculopathy", "neurological-deficit")
    evidence = [evidence_of(e) for e, _ in items]
    for finding in ctx.imaging.of("disc-herniation"):
        if finding.info is not None and "states-radiculopathy" in finding.info.flags:
            evidence.append(evidence_of(finding.source, finding.info.display, finding.date))
    return fact_from(evidence)


def fact_from(evidence: list) -> Fact:
    return Fact("", bool(evidence), evidence)
