"""``docs/clinical-rules.md``, generated from the knowledge files for clinical review."""

from __future__ import annotations

from typing import Any

from cds_service.engine.facts import FACTS
from cds_service.engine.knowledge import Knowledge, Rule

HEADER = """# Clinical rules

Generated from `hooks/` by `cds-service rules-doc`; do not edit by hand (a test
checks that this file matches the rule files). Each rule fires when its
inclusion criteria hold and none of its exclusions does. The facts the criteria
use are defined at the end, with the thresholds they read.
"""


def _criterion(node: Any, depth: int = 0) -> list[str]:
    pad = "  " * depth
    if isinstance(node, str):
        return [f"{pad}- **{node}**: {FACTS[node].description}"]
    if "not" in node:
        inner = _criterion(node["not"], depth + 1)
        return [f"{pad}- NOT:"] + inner
    key = "all" if "all" in node else "any"
    lines = [f"{pad}- {'ALL of' if key == 'all' else 'ANY of'}:"]
    for child in node[key]:
        lines += _criterion(child, depth + 1)
    return lines


def _condition_text(nodes: tuple) -> str:
    return ", ".join(n if isinstance(n, str) else "(compound)" for n in nodes)


def _rule(rule: Rule, knowledge: Knowledge) -> list[str]:
    lines = [f"## `{rule.id}` — {rule.title}", "",
             f"- Indicator: **{rule.indicator}**; hooks: {', '.join(rule.hooks)}"]
    if rule.for_each_order:
        lines.append(f"- One card per draft order matched by `{rule.for_each_order}`")
    if rule.superseded_by:
        lines.append(f"- Silent when {', '.join(f'`{r}`' for r in rule.superseded_by)} fires")
    lines += ["", "**Inclusion**", ""] + _criterion(rule.inclusion)
    if rule.exclusion:
        lines += ["", "**Exclusion** (any one silences the rule)", ""]
        for node in rule.exclusion:
            lines += _criterion(node)
    suggestions = rule.raw["card"].get("suggestions", [])
    if suggestions:
        lines += ["", "**Suggestions**", ""]
        for item in suggestions:
            order = knowledge.orders.get(item["order"])
            codes = ", ".join(f"{c['system'].rsplit('/', 1)[-1]} {c['code']}"
                              for c in order["coding"]) if order else "order chosen per region"
            extra = []
            if item.get("replaces_order"):
                extra.append("replaces the draft order (delete + create)")
            if item.get("copies", 1) > 1:
                extra.append(f"{item['copies']} orders")
            if item.get("unless"):
                extra.append(f"not when {_condition_text(tuple(item['unless']))}")
            detail = f" — {'; '.join(extra)}" if extra else ""
            lines.append(f"- {item['label']} ({codes}){detail}")
    if rule.override_reasons:
        lines += ["", "**Override reasons**: " + "; ".join(r["display"]
                                                        for r in rule.override_reasons)]
    evidence = rule.evidence
    lines += ["", f"**Evidence** ({evidence['strength'].strip()})", ""]
    lines += [f"- [{r['label']}]({r['url']})" + (f": {r['strength']}" if r.get("strength") else "")
              for r in evidence["references"]]
    lines += ["", f"Card summary template: `{rule.raw['card']['summary'].strip()}`", ""]
    return lines


def render_rules_markdown(knowledge: Knowledge) -> str:
    lines = [HEADER, "| rule | indicator | hooks |", "|---|---|---|"]
    for rule in knowledge.rules.values():
        lines.append(f"| [`{rule.id}`](#{rule.id}) | {rule.indicator} | {', '.join(rule.hooks)} |")
    lines.append("")
    for rule in knowledge.rules.values():
        lines += _rule(rule, knowledge)
    lines += ["## Thresholds", "", "| name | default | meaning |", "|---|---|---|"]
    for name, value in knowledge.thresholds.items():
        lines.append(f"| `{name}` | {value:g} | {knowledge.threshold_notes[name]} |")
    lines += ["", "## Facts", ""]
    for name in sorted(FACTS):
        lines.append(f"- **{name}**: {FACTS[name].description}")
    lines += ["", "## Value sets", "", "| id | codes | what it holds |", "|---|---|---|"]
    for vs in knowledge.valuesets.values():
        size = f"{len(vs.codes)}" + (" + class prefixes" if vs.prefixes else "")
        lines.append(f"| `{vs.id}` | {size} | {' '.join(vs.description.split())} |")
    return "\n".join(lines).rstrip() + "\n"
