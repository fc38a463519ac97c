"""Rules: inclusion and exclusion criteria evaluated over facts.

A criterion is a fact name, or ``{all: [...]}``, ``{any: [...]}``, ``{not: ...}``.
A rule fires when its inclusion holds and none of its exclusions does; a rule
listed in another's ``superseded_by`` is dropped when that other rule fires.
Rules with ``for_each_order`` fire once for each matching draft order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cds_service.engine.facts import EvaluationContext, Evidence, Fact
from cds_service.engine.knowledge import Knowledge, Rule


def holds(ctx: EvaluationContext, criterion: Any) -> bool:
    if isinstance(criterion, str):
        return ctx.fact(criterion).holds
    if isinstance(criterion, Mapping):
        if "all" in criterion:
            return all(holds(ctx, c) for c in criterion["all"])
        if "any" in criterion:
            return any(holds(ctx, c) for c in criterion["any"])
        if "not" in criterion:
            return not holds(ctx, criterion["not"])
    raise ValueError(f"malformed criterion {criterion!r}")  # the loader's schema prevents this


def supporting_facts(ctx: EvaluationContext, criterion: Any) -> list[Fact]:
    """The facts that made an inclusion criterion true, in rule order."""
    if isinstance(criterion, str):
        found = ctx.fact(criterion)
        return [found] if found.holds else []
    if isinstance(criterion, Mapping):
        if "all" in criterion or "any" in criterion:
            out: list[Fact] = []
            for child in criterion.get("all", criterion.get("any")):
                if holds(ctx, child):
                    out += [f for f in supporting_facts(ctx, child) if f not in out]
            return out
    return []  # a 'not' is satisfied by an absence: nothing to cite


@dataclass
class FiredRule:
    rule: Rule
    facts: list[Fact]
    order: dict | None = None  # the draft order that triggered a for_each_order rule
    evidence: list[Evidence] = field(default_factory=list)


def _evidence(facts: list[Fact]) -> list[Evidence]:
    out: list[Evidence] = []
    for found in facts:
        for item in found.evidence:
            if item not in out:
                out.append(item)
    return out


def fire_rules(knowledge: Knowledge, ctx: EvaluationContext) -> list[FiredRule]:
    fired: list[FiredRule] = []
    for rule in knowledge.rules_for(ctx.hook):
        if not holds(ctx, rule.inclusion) or any(holds(ctx, c) for c in rule.exclusion):
            continue
        facts = supporting_facts(ctx, rule.inclusion)
        if rule.for_each_order:
            for order in ctx.fact(rule.for_each_order)["orders"]:
                cited = [f for f in facts if f.name != rule.for_each_order]
                order_evidence = [e for e in ctx.fact(rule.for_each_order).evidence
                                  if e.ref == order["ref"]]
                fired.append(FiredRule(rule, facts, order,
                                       order_evidence + _evidence(cited)))
        else:
            fired.append(FiredRule(rule, facts, None, _evidence(facts)))
    ids = {f.rule.id for f in fired}
    return [f for f in fired if not ids.intersection(f.rule.superseded_by)]
