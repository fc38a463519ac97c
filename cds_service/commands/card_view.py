"""Cards in the terminal: one panel per card, coloured by indicator, then the verdict.

The view reads the response defensively: it is also shown when the response
violates CDS Hooks, so any field may be missing or of the wrong type.
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.markdown import Markdown
from rich.padding import Padding
from rich.panel import Panel
from rich.text import Text

from cds_service.errors import Violation

INDICATOR_STYLES = {"critical": "red", "warning": "yellow", "info": "blue"}


def terminal() -> Console:
    """A console on standard output that never fails on characters it cannot encode."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="replace")
    return Console(highlight=False)


def counted(n: int, noun: str) -> str:
    """``1 card``, ``3 cards``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _items(value: Any) -> list[dict]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _concept_display(concept: Any) -> str:
    if not isinstance(concept, dict):
        return ""
    for coding in _items(concept.get("coding")):
        if _text(coding.get("display")):
            return coding["display"]
    return _text(concept.get("text"))


def resource_label(action: dict) -> str:
    """What an action acts on: the resource's type and code display, or its resourceId."""
    resource = action.get("resource")
    if isinstance(resource, dict):
        rtype = _text(resource.get("resourceType")) or "resource"
        display = (_concept_display(resource.get("code"))
                   or _concept_display(resource.get("medicationCodeableConcept")))
        return f"{rtype}: {display}" if display else rtype
    return _text(action.get("resourceId")) or _text(resource)


def _line(label: str, value: str, style: str = "bold") -> Text:
    return Text.assemble((f"{label} ", style), value)


def _indented(text: str, level: int) -> Padding:
    """A line that keeps its indentation when it wraps."""
    return Padding(Text(text), (0, 0, 0, 2 * level))


def _source(card: dict) -> list[RenderableType]:
    source = card.get("source") if isinstance(card.get("source"), dict) else {}
    out: list[RenderableType] = []
    label, url = _text(source.get("label")), _text(source.get("url"))
    if label or url:
        out.append(_line("Source:", " - ".join(p for p in (label, url) if p)))
    topic = source.get("topic") if isinstance(source.get("topic"), dict) else {}
    if _text(topic.get("code")):
        display = _text(topic.get("display"))
        out.append(_line("Rule:", topic["code"] + (f" ({display})" if display else "")))
    return out


def _suggestions(card: dict) -> list[RenderableType]:
    suggestions = _items(card.get("suggestions"))
    if not suggestions:
        return []
    behavior = _text(card.get("selectionBehavior"))
    out: list[RenderableType] = [Text(f"Suggestions{f' ({behavior})' if behavior else ''}:",
                                      style="bold")]
    for suggestion in suggestions:
        mark = " [recommended]" if suggestion.get("isRecommended") is True else ""
        out.append(_indented(f"* {_text(suggestion.get('label'))}{mark}", 1))
        for action in _items(suggestion.get("actions")):
            what = " - ".join(p for p in (_text(action.get("description")),
                                         resource_label(action)) if p)
            out.append(_indented(f"{_text(action.get('type')) or 'action'}: {what}", 3))
    return out


def _override_reasons(card: dict) -> list[RenderableType]:
    reasons = [_text(r.get("display")) or _text(r.get("code"))
               for r in _items(card.get("overrideReasons"))]
    if not reasons:
        return []
    return [Text("Override reasons:", style="bold"), *(_indented(f"- {r}", 1) for r in reasons)]


def _links(card: dict) -> list[RenderableType]:
    links = _items(card.get("links"))
    if not links:
        return []
    out: list[RenderableType] = [Text("Links:", style="bold")]
    for link in links:
        kind = _text(link.get("type"))
        out.append(_indented(f"- {_text(link.get('label'))}: {_text(link.get('url'))}"
                             + (f" ({kind})" if kind else ""), 1))
    return out


def card_panel(card: dict, width: int) -> Panel:
    """One card as a panel titled with its summary (inside when too long for the title)."""
    indicator = _text(card.get("indicator"))
    style = INDICATOR_STYLES.get(indicator, "white")
    summary = _text(card.get("summary")) or "(no summary)"
    body: list[RenderableType] = []
    if len(summary) + 6 <= width:
        title = Text(summary, style=f"bold {style}")
    else:
        title = Text((indicator or "card").upper(), style=f"bold {style}")
        body.extend([Text(summary, style=f"bold {style}"), Text("")])
    detail = _text(card.get("detail"))
    if detail:
        body.append(Markdown(detail, hyperlinks=False))
    for section in (_source, _suggestions, _override_reasons, _links):
        rendered = section(card)
        if rendered:
            body.append(Text(""))
            body.extend(rendered)
    topic = card.get("source", {}).get("topic") if isinstance(card.get("source"), dict) else None
    code = _text(topic.get("code")) if isinstance(topic, dict) else ""
    subtitle = " - ".join(p for p in (indicator, code) if p) or None
    return Panel(Group(*body), title=title, title_align="left", subtitle=subtitle,
                 subtitle_align="right", border_style=style, padding=(0, 1))


def show_response(console: Console, heading: str, response: Any,
                  violations: list[Violation]) -> None:
    """The cards of ``response``, then whether it is valid CDS Hooks 2.0."""
    console.print(Text(heading, style="bold"))
    cards = _items(response.get("cards")) if isinstance(response, dict) else []
    if not cards:
        console.print("No cards.")
    for card in cards:
        console.print(card_panel(card, console.width))
    if violations:
        console.print(Text(f"INVALID: the response violates CDS Hooks 2.0 "
                           f"({counted(len(violations), 'problem')}):", style="bold red"))
        for violation in violations:
            console.print(f"  {violation.pointer or '(document)'}: {violation.message}",
                          markup=False, soft_wrap=True)
    else:
        counts = {k: sum(1 for c in cards if c.get("indicator") == k) for k in INDICATOR_STYLES}
        shown = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        console.print(Text(f"VALID CDS Hooks 2.0 response: {counted(len(cards), 'card')}"
                           f"{f' ({shown})' if shown else ''}", style="bold green"))
