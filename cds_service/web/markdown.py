"""A tiny Markdown renderer for card text, safe by construction.

Card ``detail`` is GitHub-flavoured Markdown that quotes the patient record
(report text, condition names), so whatever it holds is escaped as HTML
*first*; only then are the few constructs our cards use turned into tags:
paragraphs, bullet lists, ``**bold**``, ``*italics*``/``_italics_``,
```inline code``` and ``[links](https://...)`` with an http(s) target. Anything
else (raw HTML, images, ``javascript:`` links) stays visible as plain text.
"""

from __future__ import annotations

import html
import re

from markupsafe import Markup

_BULLET = re.compile(r"^\s*[-*+]\s+(.*)$")
# Code spans and links are tokens: nothing inside a code span, or a link's URL, is formatted.
_TOKEN = re.compile(r"`([^`]+)`|\[([^\]]+)\]\((https?://[^\s()]+)\)")
_STRONG = re.compile(r"\*\*(\S(?:.*?\S)?)\*\*")
_EM_STAR = re.compile(r"(?<![\w*])\*(\S(?:.*?\S)?)\*(?![\w*])")
_EM_UNDERSCORE = re.compile(r"(?<![\w_])_(\S(?:.*?\S)?)_(?![\w_])")


def _emphasis(text: str) -> str:
    text = _STRONG.sub(r"<strong>\1</strong>", text)
    text = _EM_STAR.sub(r"<em>\1</em>", text)
    return _EM_UNDERSCORE.sub(r"<em>\1</em>", text)


def _inline(escaped: str) -> str:
    """Inline formatting of one already-escaped line or paragraph."""
    out: list[str] = []
    position = 0
    for match in _TOKEN.finditer(escaped):
        out.append(_emphasis(escaped[position:match.start()]))
        code, label, url = match.groups()
        if code is not None:
            out.append(f"<code>{code}</code>")
        else:
            out.append(f'<a href="{url}" target="_blank" rel="noopener noreferrer">'
                       f"{_emphasis(label)}</a>")
        position = match.end()
    out.append(_emphasis(escaped[position:]))
    return "".join(out)


def _block(lines: list[str]) -> list[str]:
    """One blank-line-separated block: runs of bullet lines become lists, the rest paragraphs."""
    out: list[str] = []
    paragraph: list[str] = []
    items: list[str] = []

    def flush() -> None:
        if paragraph:
            out.append(f"<p>{_inline(' '.join(paragraph))}</p>")
            paragraph.clear()
        if items:
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
            items.clear()

    for line in lines:
        bullet = _BULLET.match(line)
        if bullet:
            if paragraph:
                flush()
            items.append(bullet.group(1).strip())
        elif items and line.startswith((" ", "\t")):
            items[-1] += " " + line.strip()  # a continuation line of the last item
        else:
            if items:
                flush()
            paragraph.append(line.strip())
    flush()
    return out


def render_markdown(text: str | None) -> Markup:
    """HTML for card Markdown; every character of ``text`` is escaped before formatting."""
    if not text:
        return Markup("")
    escaped = html.escape(text.replace("\r\n", "\n"), quote=True)
    blocks: list[list[str]] = [[]]
    for line in escaped.split("\n"):
        if line.strip():
            blocks[-1].append(line)
        elif blocks[-1]:
            blocks.append([])
    return Markup("\n".join(part for block in blocks if block for part in _block(block)))
