"""Imaging findings that have no standard code, recognised in free text.

``terminology.md`` §8 records that no SNOMED CT or RadLex code was found for a
fluid collection, rim/peripheral enhancement or compression of the cord, cauda
equina or a nerve root, and a recurrent herniation is usually only written in
a report. ``rules.md`` ("Reading the record") therefore has the service read
``code.text``, ``valueString``, ``valueCodeableConcept.text``,
``DiagnosticReport.conclusion`` and ``Condition.code.text`` by phrase, with
negation and uncertainty handled. This module does that and nothing else: it
is pure (text in, findings out) and knows nothing of FHIR.

Why our own code and not medspaCy's ConText
-------------------------------------------
medspaCy (PyPI ``medspacy`` 1.3.1) installs offline from the registry, but
measured in a throw-away virtualenv it brings spaCy 3.8, thinc, blis, numpy,
pydantic, nltk, PyRuSH, QuickUMLS and more: 283 MB installed, for four
concepts. Per call, on a 640-character report on this machine, its pipeline
(target matcher + ConText) took about 4.3 ms with spaCy's rule sentencizer and
about 40 ms with its default PyRuSH sentencizer -- against a p99 budget of a
few milliseconds for about ten report texts per request. Its default ConText
rules also missed "abscess cannot be excluded" and "may represent a seroma"
(both left certain), so the same spine-specific rules would be needed anyway.
So this is a small implementation in the spirit of NegEx / ConText (Chapman et
al. 2001; Harkema et al. 2009) on ``re`` alone, with every pattern compiled at
import and each pattern tried only where one of its lead words starts (about
0.15-0.2 ms for a 600-character report here, about 20 µs for a short
``code.text``):

* **Targets** -- phrases for the four concepts in :data:`CONCEPTS`, tolerant
  of case, hyphens, plurals and British spelling.
* **Triggers** -- negation, uncertainty, resolution/history and affirmation
  phrases, each looking forward (pre), backward (post) or both, with a word
  window; **pseudo-triggers** that contain a trigger word but are not one
  ("no interval change", "without and with contrast", "partially resolved",
  "not drained"); **terminators** ("but", "however", "although", "though",
  "yet", "except", "aside from", "which", ";") and sentence boundaries, which
  end a scope.
* **Scope** -- a pre-trigger reaches the nearest target after it within its
  window, then further targets joined to it as a list ("no abscess, haematoma
  or seroma", "no collection or compression of the thecal sac", "no collection
  to suggest abscess"); a post-trigger does the same backwards. A scope ends at
  a terminator, a sentence boundary or another trigger (the nearest trigger
  wins). A forward list does not continue across an indefinite article ("no
  abscess and a small seroma") nor across "by" ("no compression of the thecal
  sac by the collection"); a trigger's first target is not reached across a
  comma ("no fracture or malalignment, small seroma").

Status decisions
----------------
* ``negated`` -- no, not, without, nor, negative for, free of, absence of, no
  evidence / sign / findings of, not seen / identified / visualised, absent,
  ruled out, **unlikely**, "not consistent with".
* ``uncertain`` -- possible, probable, probably, questionable, equivocal,
  suspected, suspicious for, **concerning for** and worrisome for (they voice a
  suspicion, not a diagnosis, so uncertain -- which still counts by default
  in :func:`present_concepts`), suggestive of, may / might / could represent,
  **cannot exclude / cannot be excluded / not excluded** (a finding the
  radiologist cannot rule out is not asserted), less likely, rule out /
  evaluate for (an indication's question), "versus" (except between two words
  for the same concept: "seroma versus abscess" is a collection either way),
  and a question mark ("?abscess", "abscess?"). A hedge on an infection
  ("possible infected seroma", "cannot exclude infection of the seroma") does
  not make the collection uncertain.
* ``present`` -- anything else, including **"likely" / "most likely"**,
  "consistent with", "compatible with", "in keeping with", "presumed" and
  "favoured": radiologists use "likely" for the working diagnosis they expect
  to be acted on, so it is an assertion here; "probable" and "probably" stay
  uncertain as asked. Smaller, decreasing, unchanged, residual, "resolving",
  "partially / nearly resolved" and "has not resolved" findings are present.
* ``resolved`` -- resolved, has resolved, resolution of, interval resolution,
  no longer seen / visualised / present, disappeared, drained / evacuated /
  removed, and historical mentions ("history of disc herniation", "s/p
  discectomy for disc herniation", "following drainage of the abscess"): not a
  current finding.

"non-enhancing" / "nonenhancing" / "does not enhance" negate rim-enhancement
only, so "non-enhancing fluid collection" is a present collection without
enhancement. "enhancing collection" / "enhancing fluid" assert both a
collection and rim enhancement. A bare "enhancement" (of a nerve root, of
scar) is not rim enhancement; it is reported only when negated ("collection
without enhancement").

Known limits (deliberately unsupported)
---------------------------------------
* A list continued after a negation by a comma alone is read as a list: "no
  abscess, small seroma" negates the seroma (a report writes "but", ";" or a
  new sentence). Likewise "herniation at L4-5, seroma not seen" negates both.
* "abutting" / "contacting" a nerve root is not compression (disc
  nomenclature keeps them apart) and is not matched; nor are phlegmon,
  granulation tissue, epidural fibrosis, a disc bulge, canal or foraminal
  stenosis without a compression word, or a bare "extrusion" / "protrusion"
  without a disc or location word (they are also said of cement and screws).
* Enhancement told in another sentence than the collection ("Collection. Its
  wall enhances.") counts only when that sentence itself names a rim, wall or
  peripheral enhancement.
* Double negation ("not without"), hedges spread over several sentences,
  lists of more than a few words between items, and temporal reasoning beyond
  the trigger words are out of scope.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate

__all__ = ["CONCEPTS", "TextFinding", "find_findings", "present_concepts"]

CONCEPTS = ("fluid-collection", "rim-enhancement", "neural-compression", "disc-herniation")

_PRESENT = "present"
_NEGATED = "negated"
_UNCERTAIN = "uncertain"
_RESOLVED = "resolved"


@dataclass(frozen=True)
class TextFinding:
    concept: str  # one of CONCEPTS
    status: str  # "present" | "negated" | "uncertain" | "resolved"
    phrase: str  # the matched target text as it appears
    start: int  # offset in the input text
    end: int


# ---------------------------------------------------------------------------
# Pattern building blocks. A literal space in a pattern given to _rx() matches
# any run of whitespace or hyphens ("fluid-collection", "post operative").
# ---------------------------------------------------------------------------

_SEP = r"[\s\-]+"
_W = r"(?:[\w'/]+(?:-[\w'/]+)*\s+)"  # one word of a gap, with its trailing space
# a gap word that is not a trigger or a conjunction (a target does not swallow them)
_GW = r"(?:(?!(?:no|not|without|and|or|nor|but|which|versus|vs)\b)[\w'/]+(?:-[\w'/]+)*\s+)"


def _rx(pattern: str) -> str:
    return pattern.replace(" ", _SEP)


_COLL = (
    r"(?:(?:fluid|csf|cerebrospinal fluid|serous) (?:collections?|pockets?|accumulations?|"
    r"loculations?)|loculated fluid|collections?|seromas?|pseudo-?meningoceles?|"
    r"h(?:a)?ematomas?|abscess(?:es)?|empyemas?|fluid)"
)

_FLUID_COLLECTION = (
    r"(?:(?:post-?operative|postop|post-?surgical) )?"
    r"(?:(?:fluid|csf|cerebrospinal fluid|serous) (?:collections?|pockets?|accumulations?|"
    r"loculations?)|(?:multi)?loculated (?:fluid|collections?)|fluid-filled (?:cavity|pocket)|"
    r"collections?|seromas?|pseudo-?meningoceles?|h(?:a)?ematomas?|abscess(?:es)?|empyemas?)\b"
)

_RIM_ADJ = r"(?:peripheral(?:ly)?|rim|ring|wall|marginal|circumferential|capsular|surrounding)"
_RIM_ENHANCEMENT = (
    r"(?:"
    # forced negative: enhancement denied by the word itself
    r"(?P<neg>non-?enhancing|(?:does|do|did) not enhance)"
    # "collection with (thin) peripheral enhancement", "collection ... enhances"
    rf"|{_COLL} {_GW}{{0,5}}?(?:with|demonstrating|showing|exhibiting|having|has|shows|"
    rf"demonstrates) {_W}{{0,3}}?enhancement"
    rf"|{_COLL} {_W}{{0,3}}?enhances"
    # "rim enhancement", "ring-enhancing", "peripherally enhancing", "wall enhances"
    rf"|{_RIM_ADJ} enhanc(?:ement|ing|es)"
    r"|enhanc(?:es|ing) peripherally"
    r"|enhancing (?:rim|wall|walls|margins?|capsule|periphery)"
    r"|rim of (?:[\w-]+ )?enhancement"
    # "enhancing (fluid) collection" -> both concepts
    rf"|enhancing {_GW}{{0,2}}?{_COLL}"
    # "enhancement around the collection" (the collection itself is a separate target)
    rf"|enhancement(?= (?:around|surrounding|encircling|about|along|of|at|within) "
    rf"(?:the |this |that |a |an )?{_GW}{{0,3}}?{_COLL})"
    r")\b"
)
# A bare "enhancement": only reported when negated ("without enhancement").
_BARE_ENHANCEMENT = r"enhanc(?:ement|ing)\b"

_NEURAL = (
    r"(?:thecal sac|dural sac|dural tube|dura|spinal cord|cord|conus medullaris|conus|"
    r"cauda equina|nerve roots?|roots?|nerves?|neural elements|neural structures)"
)
_COMP_NOUN = (
    r"(?:compression|effacement|displacement|impingement|deformity|deformation|indentation|"
    r"distortion|encroachment|mass effect|compressive effect|compromise)"
)
_COMP_VERB = (
    r"(?:compress(?:es|ed|ing)?|effac(?:es|ed|ing|e)|displac(?:es|ed|ing|e)|"
    r"imping(?:es|ed|ing|e)(?: up)?(?: on)?|deform(?:s|ed|ing)?|indent(?:s|ed|ing)?|"
    r"encroach(?:es|ed|ing)?(?: up)?(?: on)?|distort(?:s|ed|ing)?)"
)
_NEURAL_COMPRESSION = (
    r"(?:"
    rf"{_COMP_NOUN} (?:of|on|upon|onto|to|involving) {_GW}{{0,5}}?{_NEURAL}"
    rf"|{_COMP_VERB} {_GW}{{0,5}}?{_NEURAL}"
    rf"|{_NEURAL} (?:compression|effacement|impingement|displacement|deformity|compromise)"
    rf"|{_NEURAL} {_GW}{{0,3}}?(?:is|are|appears?|was|were|being) {_W}{{0,2}}?"
    r"(?:compressed|effaced|displaced|impinged|deformed|indented|distorted)"
    r")\b"
)

_NOT_HARDWARE = r"(?!(?:screws?|hardware|cement|pedicle|implants?|cages?|grafts?|rods?)\b)"
_DISC_HERNIATION = (
    r"(?:"
    rf"(?:(?:recurrent|residual|persistent|new) {_GW}{{0,2}}?)?"
    rf"dis[ck]s? {_GW}{{0,2}}?(?:herniations?|extrusions?|protrusions?|prolapses?|"
    r"sequestrations?|fragments?)"
    rf"|(?:re-?)?herniated {_GW}{{0,2}}?(?:dis[ck]s?|nucleus pulposus|fragments?|material)"
    rf"|(?:extruded|protruding|protruded|prolapsed|sequestered|migrated) {_GW}{{0,2}}?"
    r"(?:dis[ck]s?|fragments?|material)"
    r"|re-?herniations?"
    rf"|recurrent {_GW}{{0,2}}?herniations?"
    r"|herniations?(?! (?:of|into) (?:the )?(?:nerve |roots?|cord|fat|fluid|arachnoid|dura|bowel))"
    r"|hnps?"
    rf"|dis[ck]s? {_GW}{{0,2}}?(?:is|are) {_W}?herniated"
    r")\b"
)
# "left paracentral extrusion": a location word makes a bare extrusion / protrusion a disc
_DISC_LOCATED = (
    r"(?:central|paracentral|foraminal|extraforaminal|far lateral|subarticular|broad-based|"
    rf"focal|posterior|left|right|large|small|moderate) {_NOT_HARDWARE}{_GW}{{0,2}}?"
    r"(?:extrusions?|protrusions?)\b"
)

# The text is lower-cased once, so the patterns are lower case and compiled
# without re.I. Each pattern is tried only where a word that can begin it
# starts: its lead words, each a whole word or, ending in "*", a stem.
_COLL_LEADS = (
    "fluid* csf cerebrospinal serous loculated collection* seroma* pseudomeningocele* pseudo "
    "hematoma* haematoma* abscess* empyema*"
)
# (concept, pattern, lead words, a string that must occur within the first
# characters from the lead for the pattern to be worth trying, how many)
_TARGET_TABLE: tuple[tuple[str, str, str, str, int], ...] = (
    ("fluid-collection", _FLUID_COLLECTION, f"post* multiloculated {_COLL_LEADS}", "", 0),
    ("rim-enhancement", _RIM_ENHANCEMENT,
     f"non nonenhancing does do did peripheral* rim ring wall marginal circumferential "
     f"capsular surrounding enhanc* {_COLL_LEADS}", "enhanc", 200),
    ("neural-compression", _NEURAL_COMPRESSION,
     "compress* compromise effac* displac* imping* deform* indent* distort* encroach* mass "
     "thecal dural dura spinal cord conus cauda nerve nerves root roots neural", "", 0),
    ("disc-herniation", _DISC_HERNIATION,
     "recurrent residual persistent new disc* disk* herniat* reherniat* re extrud* protru* "
     "prolaps* sequest* migrated hnp hnps", "", 0),
    ("disc-herniation", _DISC_LOCATED,
     "central paracentral foraminal extraforaminal far subarticular broad focal posterior "
     "left right large small moderate", "trusion", 120),
)

_NEG, _UNC, _RES, _AFF = "NEG", "UNC", "RES", "AFF"
_PSEUDO, _TERM, _TERMW, _BOUND, _VS = "PSEUDO", "TERM", "TERMW", "BOUND", "VS"

_SEEN = (
    r"(?:seen|identified|visuali[sz]ed|demonstrated|appreciated|evident|present|detected|"
    r"noted|apparent|visible|shown|observed)"
)
_HEDGE_ADV = r"(?:definitely|clearly|convincingly|definitively|well|significantly)"
_CHANGE = (
    r"(?:changes?|increase|enlargement|progression|growth|worsening|difference|decrease|"
    r"interval change)"
)
_CHANGE_ADJ = (
    r"(?:significant|interval|appreciable|substantial|definite|further|marked|major|"
    r"apparent|measurable|new|notable|real|considerable|other)"
)

# Triggers: (lead words, pattern, category, forward window, backward window).
# A window is the most words allowed between the trigger and the nearest
# target; -1: the trigger does not look that way. "?" and ";" and sentence
# boundaries are found by _punctuation().
_TRIGGER_TABLE: tuple[tuple[str, str, str, int, int], ...] = (
    # --- pseudo-triggers: look like triggers, are not -----------------------
    ("no", rf"no (?:{_CHANGE_ADJ} ){{0,3}}{_CHANGE}", _PSEUDO, -1, -1),
    ("without", rf"without (?:{_CHANGE_ADJ} ){{0,3}}{_CHANGE}", _PSEUDO, -1, -1),
    ("not", r"not (?:significantly )?(?:changed|increased|enlarged|grown)|not only"
     r"|not (?:yet |been |fully |completely )?(?:drained|evacuated|excised|resected|removed)",
     _PSEUDO, -1, -1),
    ("with without", r"with(?:out)? (?:and|or|&) with(?:out)?", _PSEUDO, -1, -1),
    ("w/o w/ w/wo", r"w/o (?:and|&) w/|w/ (?:and|&) w/o|w/wo|w/w/o", _PSEUDO, -1, -1),
    ("without w/o",
     r"(?:without|w/o) (?:iv |intravenous |gadolinium |iodinated )?(?:contrast|gadolinium)",
     _PSEUDO, -1, -1),
    ("partial partially incomplete incompletely near nearly almost not",
     r"(?:partial(?:ly)? |incomplete(?:ly)? |near(?:ly)? complete(?:ly)? "
     r"|almost (?:complete(?:ly)? )?|not (?:yet )?(?:completely |fully |entirely )?)"
     r"resol(?:ved|ution|ving)", _PSEUDO, -1, -1),
    ("resolving", r"resolving", _PSEUDO, -1, -1),
    ("should could may can to will",
     r"(?:should|could|may|can|to|will) (?:be |then be )?"
     r"(?:drained|evacuated|excised|resected|removed)",
     _PSEUDO, -1, -1),
    # --- negation ----------------------------------------------------------
    ("no", r"no (?:[\w-]+ ){0,2}?(?:evidence|findings?|signs?) (?:of|for|to suggest|suggesting|"
     r"suggestive of|consistent with|compatible with|in keeping with)", _NEG, 6, -1),
    ("not", r"not (?:consistent|compatible) with|not likely", _NEG, 6, -1),
    ("negative free absence no not without w/o nor neither",
     r"negative for|free of|absence of|no(?! longer)|not|without|w/o|nor|neither", _NEG, 5, -1),
    ("not", rf"not (?:{_HEDGE_ADV} )?{_SEEN}", _NEG, -1, 4),
    ("absent excluded ruled", r"absent|excluded|ruled out", _NEG, -1, 4),
    ("unlikely", r"unlikely", _NEG, 4, 4),
    # --- uncertainty -------------------------------------------------------
    ("cannot can can't can’t could is are not",
     r"(?:cannot|can not|can't|could not) (?:be )?(?:entirely |completely |definitely )?"
     r"(?:excluded|ruled out)|not (?:entirely |completely )?(?:excluded|ruled out)"
     r"|(?:is|are) difficult to exclude|(?:is|are) (?:also )?(?:possible|questioned|considered)",
     _UNC, -1, 4),
    ("cannot can can't can’t could difficult",
     r"(?:cannot|can not|can't|could not) (?:entirely |completely |definitely )?"
     r"(?:exclude|rule out)|difficult to exclude", _UNC, 6, -1),
    ("may might could possibly probably",
     r"(?:may|might|could|possibly|probably) (?:be |also )?(?:consistent|compatible) with",
     _UNC, 6, -1),
    ("may might could possible possibly possibility probable probably questionable "
     "questionably question equivocal indeterminate suspicious suspicion suspect concerning "
     "worrisome suggestive suggesting differential rule to r/o evaluate evaluation assess "
     "assessment",
     r"(?:may|might|could) (?:also )?(?:represent|be|reflect|indicate|relate to)"
     r"|possible|possibly|possibility of|probable|probably|questionable|questionably"
     r"|question of|equivocal(?: for)?|indeterminate(?: for)?|suspicious (?:for|of)"
     r"|suspicion (?:for|of)|suspect|concerning for|worrisome for|suggestive of|suggesting"
     r"|differential (?:diagnosis )?(?:includes?|considerations? include|of)"
     r"|rule out|to exclude|to rule out|r/o|evaluate for|evaluation for|assess for"
     r"|assessment for", _UNC, 6, -1),
    ("suspected less", r"suspected|less likely", _UNC, 6, 4),
    ("versus vs", r"versus|vs\.?", _VS, 3, 3),
    # --- resolution / history ------------------------------------------------
    ("there no", r"(?:there (?:is|are) )?no longer", _RES, 6, -1),
    ("no", rf"no longer {_SEEN}", _RES, -1, 8),
    ("interval complete total full resolution history h/o",
     r"(?:(?:interval|complete|total|full) )?resolution of|history of|h/o", _RES, 6, -1),
    ("since now completely entirely fully resolved disappeared is are",
     r"(?:since |now |completely |entirely |fully )?"
     r"(?:resolved|disappeared)(?: in the interval)?|(?:is|are) gone", _RES, 2, 8),
    ("drained evacuated excised resected removed",
     r"drained|evacuated|excised|resected|removed", _RES, 1, 4),
    ("status s/p after following prior previous",
     r"(?:status post|s/p|after|following|prior|previous) (?:[\w-]+ ){0,3}?"
     r"(?:evacuation|drainage|aspiration|excision|removal|resection|(?:micro)?discectomy|"
     r"surgery|decompression|laminectomy|hemilaminectomy|laminotomy) (?:of|for)", _RES, 4, -1),
    # --- affirmation: asserted, and ends any scope before it ---------------
    ("most very highly likely consistent compatible in diagnostic presumed presumably "
     "favored favoured there",
     r"(?:most |very |highly )?likely|consistent with|compatible with|in keeping with"
     r"|diagnostic of|presumed|presumably|favou?red|there (?:is|are|was|were|has been|have been)",
     _AFF, 6, -1),
    # --- terminators -----------------------------------------------------------
    ("but however although though yet whereas except aside apart other with nevertheless "
     "nonetheless instead otherwise",
     r"but|however|although|though|yet|whereas|except(?: for)?|aside from|apart from"
     r"|other than|with the exception of|nevertheless|nonetheless|instead|otherwise",
     _TERM, -1, -1),
    ("which", r"which", _TERMW, -1, -1),
)

# Words for dispatch: every ASCII punctuation mark but "'" becomes a space, so
# str.split() gives the words ("non-enhancing" -> "non", "enhancing"; "w/o" ->
# "w", "o").
_WORD_SPLIT = str.maketrans(
    {c: " " for c in "!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n\r\x0b\x0c\xa0\u2009\u202f"}
)
_PUNCT_RE = re.compile(r"[!?;\n]|\.(?=\s|$)")
_LIST_ITEM_RE = re.compile(r"[^\S\n]*(?:[-*\u2022]|\d+[.)])[^\S\n]")
_ABBREVIATIONS = ("vs", "approx", "e.g", "i.e", "cf", "dr", "fig", "ca", "st")


def _lead(lead: str) -> str:
    """The dispatch word of a lead: its first word as split from the text."""
    return lead.translate(_WORD_SPLIT).split()[0]


def _alternatives(pattern: str) -> list[str]:
    """Split a pattern at its top-level ``|``."""
    parts, depth, last, i = [], 0, 0, 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            parts.append(pattern[last:i])
            last = i + 1
        i += 1
    parts.append(pattern[last:])
    return parts


class _Entry:
    __slots__ = ("order", "kind", "pattern", "regex", "cat", "fwd", "bwd", "near", "within")

    def __init__(
        self, order: int, kind: str, pattern: str, cat: str, fwd: int, bwd: int,
        near: str = "", within: int = 0,
    ) -> None:
        self.order = order
        self.near = near  # a target is tried only if this occurs within ``within`` chars
        self.within = within
        self.kind = kind  # a concept, or "trigger"
        self.pattern = pattern  # alternatives longest first, spaces made tolerant
        self.regex = re.compile(f"(?:{pattern})" + r"(?!\w)")
        self.cat = cat
        self.fwd = fwd
        self.bwd = bwd


def _sorted_alternatives(pattern: str) -> str:
    """Longer alternatives first: Python takes the first that matches, not the longest."""
    return "|".join(_rx(a) for a in sorted(_alternatives(pattern), key=len, reverse=True))


def _build_entries() -> tuple[dict[str, list[_Entry]], list[tuple[str, _Entry]], list[_Entry]]:
    entries: list[tuple[str, _Entry]] = []
    for concept, pattern, leads, near, within in _TARGET_TABLE:
        # the target alternations are ordered by hand: kept as they are
        entry = _Entry(len(entries), concept, _rx(pattern), "", -1, -1, near, within)
        entries.append((leads, entry))
    for leads, pattern, cat, fwd, bwd in _TRIGGER_TABLE:
        entry = _Entry(len(entries), "trigger", _sorted_alternatives(pattern), cat, fwd, bwd)
        entries.append((leads, entry))
    exact: dict[str, list[_Entry]] = {}
    stems: list[tuple[str, _Entry]] = []
    for leads, entry in entries:
        for lead in leads.split():
            if lead.endswith("*"):
                stems.append((lead[:-1], entry))
            else:
                exact.setdefault(_lead(lead), []).append(entry)
    return exact, stems, [e for _, e in entries]


_EXACT, _STEMS, _ALL_ENTRIES = _build_entries()


class _WordPlan:
    """What to try where a given word starts: its targets, and one regex for all of
    its triggers (a named group per trigger, longest alternatives first)."""

    __slots__ = ("targets", "triggers", "groups")

    def __init__(self, entries: list[_Entry]) -> None:
        self.targets = tuple(e for e in entries if e.kind != "trigger")
        trigs = [e for e in entries if e.kind == "trigger"]
        self.groups: dict[str, _Entry] = {}
        self.triggers: re.Pattern[str] | None = None
        if trigs:
            alts = [(a, e) for e in trigs for a in _alternatives(e.pattern)]
            alts.sort(key=lambda ae: len(ae[0]), reverse=True)
            parts = []
            for i, (alt, e) in enumerate(alts):
                self.groups[f"g{i}"] = e
                parts.append(f"(?P<g{i}>{alt})")
            self.triggers = re.compile("(?:" + "|".join(parts) + r")(?!\w)")


# Memo of the words met so far (a report's vocabulary is small): their plans,
# and the set of those that have one. Cleared when it grows too large.
_PLANS: dict[str, _WordPlan] = {}
_KNOWN: set[str] = {""}
_KNOWN_MAX = 50_000
_PLANS_BY_ENTRIES: dict[tuple[int, ...], _WordPlan] = {}


def _plan_for(word: str) -> _WordPlan | None:
    """What can begin at ``word``, or None."""
    hits = {e.order: e for e in _EXACT.get(word, ())}
    hits.update((e.order, e) for stem, e in _STEMS if word.startswith(stem))
    if not hits:
        return None
    key = tuple(sorted(hits))
    plan = _PLANS_BY_ENTRIES.get(key)
    if plan is None:
        plan = _PLANS_BY_ENTRIES[key] = _WordPlan([hits[k] for k in key])
    return plan


def _learn(word: str) -> bool:
    """Memoise ``word``; true when something can begin at it."""
    if len(_KNOWN) >= _KNOWN_MAX:
        _KNOWN.clear()
        _KNOWN.add("")
        _PLANS.clear()
    plan = _plan_for(word)
    if plan is not None:
        _PLANS[word] = plan
    _KNOWN.add(word)
    return plan is not None


_BARE_ENH_RE = re.compile(_BARE_ENHANCEMENT)

_WORD_RE = re.compile(r"[^\W_]+")
_FWD_CHAIN_OK = re.compile(
    r",|/|&|\b(?:and|or|nor|with|causing|producing|resulting in|to suggest|to indicate|such as"
    r"|including)\b"
)
_BWD_CHAIN_OK = re.compile(r",|/|&|\b(?:and|or|nor)\b")
_FWD_CHAIN_BREAK = re.compile(r"\b(?:a|an|by)\b")
_FIRST_GAP_BREAK = re.compile(r"[,;]|\bby\b")
# "possible infection of the seroma": the hedge is on the infection, not the seroma
_INFECTION = re.compile(r"\b(?:super)?infect")

_RANK = {_RESOLVED: 3, _NEGATED: 2, _UNCERTAIN: 1, _PRESENT: 0}
_CAT_STATUS = {_NEG: _NEGATED, _UNC: _UNCERTAIN, _RES: _RESOLVED, _AFF: _PRESENT, _VS: _UNCERTAIN}
_INNER = frozenset({_NEG, _UNC, _RES, _VS})
_BWD_BLOCKERS = frozenset({_TERM, _BOUND})


class _Target:
    __slots__ = ("concept", "start", "end", "forced", "weak", "pre", "post", "inner")

    def __init__(self, concept: str, start: int, end: int, forced: bool, weak: bool) -> None:
        self.concept = concept
        self.start = start
        self.end = end
        self.forced = forced
        self.weak = weak
        self.pre: str | None = None
        self.post: str | None = None
        self.inner: str | None = None


class _Trig:
    __slots__ = ("cat", "start", "end", "fwd", "bwd")

    def __init__(self, cat: str, start: int, end: int, fwd: int, bwd: int) -> None:
        self.cat = cat
        self.start = start
        self.end = end
        self.fwd = fwd
        self.bwd = bwd


def _lower(text: str) -> str:
    low = text.lower()
    if len(low) != len(text):  # a few characters lower-case to two: keep offsets
        low = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    return low


def _scan(low: str) -> tuple[list[_Target], list[_Trig]]:
    """Targets and word triggers, each tried only where a word that can begin it starts."""
    pieces = low.translate(_WORD_SPLIT).split(" ")  # one piece per word, "" between spaces
    plans, known = _PLANS, _KNOWN
    chosen = [k for k, w in enumerate(pieces) if w in plans or (w not in known and _learn(w))]
    targets: list[_Target] = []
    trigs: list[_Trig] = []
    if not chosen:
        return targets, trigs
    ends = list(accumulate(map(len, pieces)))  # piece k starts at ends[k - 1] + k
    reach: dict[str, int] = {}
    trig_reach = 0
    for k in chosen:
        pos = ends[k - 1] + k if k else 0
        plan = plans[pieces[k]]
        for entry in plan.targets:
            if pos >= reach.get(entry.kind, 0) and (
                not entry.near or low.find(entry.near, pos, pos + entry.within) >= 0
            ):
                m = entry.regex.match(low, pos)
                if m:
                    forced = entry.kind == "rim-enhancement" and m.group("neg") is not None
                    targets.append(_Target(entry.kind, pos, m.end(), forced, False))
                    reach[entry.kind] = m.end()
        if plan.triggers is not None and pos >= trig_reach:
            m = plan.triggers.match(low, pos)
            if m:
                e = plan.groups[m.lastgroup]  # type: ignore[index]
                trigs.append(_Trig(e.cat, pos, m.end(), e.fwd, e.bwd))
                trig_reach = m.end()
    return targets, trigs


def _scan_reference(low: str) -> tuple[list[_Target], list[_Trig]]:
    """Every pattern tried at every word, the longest trigger kept: the slow reference
    against which the tests check the lead words and the order of alternatives."""
    words = low.translate(_WORD_SPLIT)
    targets: list[_Target] = []
    trigs: list[_Trig] = []
    reach: dict[str, int] = {}
    trig_reach = 0
    pos = 0
    for word in words.split():
        pos = words.find(word, pos)
        best: tuple[int, _Entry] | None = None
        for entry in _ALL_ENTRIES:
            if entry.kind == "trigger":
                m = entry.regex.match(low, pos) if pos >= trig_reach else None
                if m and (best is None or m.end() > best[0]):
                    best = (m.end(), entry)
            elif pos >= reach.get(entry.kind, 0):
                m = entry.regex.match(low, pos)
                if m:
                    forced = entry.kind == "rim-enhancement" and m.group("neg") is not None
                    targets.append(_Target(entry.kind, pos, m.end(), forced, False))
                    reach[entry.kind] = m.end()
        if best is not None:
            e = best[1]
            trigs.append(_Trig(e.cat, pos, best[0], e.fwd, e.bwd))
            trig_reach = best[0]
        pos += len(word)
    return targets, trigs


def _punctuation(low: str, trigs: list[_Trig]) -> None:
    """Sentence boundaries, ";" and "?" (a question about the word next to it)."""
    n = len(low)
    for m in _PUNCT_RE.finditer(low):
        i = m.start()
        c = low[i]
        nxt = low[i + 1] if i + 1 < n else " "
        if c == ";":
            trigs.append(_Trig(_TERM, i, i + 1, -1, -1))
        elif c == "\n":
            rest = _LIST_ITEM_RE.match(low, i + 1)
            if rest or low[i + 1 : i + 2] == "\n" or low[max(0, i - 1) : i] == ":":
                trigs.append(_Trig(_BOUND, i, i + 1, -1, -1))
        else:
            if c == "?":
                if nxt.isalpha():
                    trigs.append(_Trig(_UNC, i, i + 1, 0, -1))
                j = i - 1 if i and low[i - 1] != " " else i - 2
                if j >= 0 and low[j].isalnum():
                    trigs.append(_Trig(_UNC, i, i + 1, -1, 0))
            if nxt.isspace() or i + 1 == n:
                if c == "." and low[max(0, i - 6) : i].rsplit(" ", 1)[-1] in _ABBREVIATIONS:
                    continue
                trigs.append(_Trig(_BOUND, i, i + 1, -1, -1))


def _words(gap: str) -> int:
    return len(_WORD_RE.findall(gap))


def _forward(low: str, trig: _Trig, limit: int, targets: list[_Target]) -> list[_Target]:
    """Targets in the forward scope of a pre-trigger; ``limit``: where the next trigger,
    terminator or sentence boundary starts."""
    scope: list[_Target] = []
    reach = trig.end
    for t in targets:
        if t.start < trig.end:
            continue
        if t.start >= limit:
            break
        if not scope:
            gap = low[trig.end : t.start]
            if (
                _words(gap) > trig.fwd
                or _FIRST_GAP_BREAK.search(gap)
                or (trig.cat == _UNC and _INFECTION.search(gap))
            ):
                break
        elif t.start >= reach:
            gap = low[reach : t.start]
            n = _words(gap)
            if n and (n > 5 or not _FWD_CHAIN_OK.search(gap) or _FWD_CHAIN_BREAK.search(gap)):
                break
        scope.append(t)
        reach = max(reach, t.end)
    return scope


def _backward(low: str, trig: _Trig, limit: int, by_end: list[_Target]) -> list[_Target]:
    """Targets in the backward scope of a post-trigger; ``limit``: where the nearest
    terminator, boundary or other post-trigger before it ends. ``by_end``: the targets,
    last-ending first."""
    scope: list[_Target] = []
    reach = trig.start
    for t in by_end:
        if t.end > trig.start:
            continue
        if t.start < limit:
            break
        if not scope:
            if _words(low[t.end : trig.start]) > trig.bwd:
                break
        elif t.end <= reach:
            gap = low[t.end : reach]
            n = _words(gap)
            if n and (n > 5 or not _BWD_CHAIN_OK.search(gap)):
                break
        scope.append(t)
        reach = min(reach, t.start)
    return scope


def _versus_same_concept(trig: _Trig, targets: list[_Target], low: str) -> bool:
    """ "seroma versus abscess" is a collection either way: not a hedge."""
    before = [t for t in targets if t.end <= trig.start and _words(low[t.end : trig.start]) <= 3]
    after = [t for t in targets if t.start >= trig.end and _words(low[trig.end : t.start]) <= 3]
    if not before or not after:
        return False
    return max(before, key=lambda t: t.end).concept == min(after, key=lambda t: t.start).concept


def _analyse(text: str, reference: bool = False) -> list[TextFinding]:
    low = _lower(text)
    targets, trigs = _scan_reference(low) if reference else _scan(low)
    if not targets:
        return []
    if "enhanc" in low:
        strong_rim = [(t.start, t.end) for t in targets if t.concept == "rim-enhancement"]
        for m in _BARE_ENH_RE.finditer(low):
            s, e = m.span()
            if (s == 0 or not low[s - 1].isalnum()) and not any(
                s < r_end and r_start < e for r_start, r_end in strong_rim
            ):
                targets.append(_Target("rim-enhancement", s, e, False, True))
    targets.sort(key=lambda t: (t.start, -t.end))
    _punctuation(low, trigs)
    trigs.sort(key=lambda t: t.start)
    for tr in trigs:
        if tr.cat == _VS and _versus_same_concept(tr, targets, low):
            tr.cat = _PSEUDO

    # a trigger inside a target: "thecal sac is not compressed", "collection with no
    # enhancement"
    trig_starts = [tr.start for tr in trigs]
    for t in targets:
        k = bisect_right(trig_starts, t.start)
        while k < len(trigs) and trigs[k].start < t.end:
            tr = trigs[k]
            if tr.end <= t.end and tr.cat in _INNER:
                t.inner = _CAT_STATUS[tr.cat]
            k += 1

    by_end = sorted(targets, key=lambda x: (-x.end, -x.start))
    n_trigs = len(trigs)
    bwd_limit = 0  # end of the last terminator, boundary or post-trigger so far
    for i, tr in enumerate(trigs):
        status = _CAT_STATUS.get(tr.cat)
        if status is not None:
            if tr.fwd >= 0:
                j = i + 1
                while j < n_trigs and trigs[j].start < tr.end:
                    j += 1
                limit = trigs[j].start if j < n_trigs else len(low)
                for t in _forward(low, tr, limit, targets):
                    t.pre = status  # later triggers are nearer: they win
            if tr.bwd >= 0:
                for t in _backward(low, tr, bwd_limit, by_end):
                    if t.post is None:  # the nearest post-trigger is seen first
                        t.post = status
        if tr.cat in _BWD_BLOCKERS or (tr.bwd >= 0 and tr.cat != _PSEUDO):
            bwd_limit = tr.end

    out: list[TextFinding] = []
    for t in targets:
        if t.forced:
            status = _NEGATED
        else:
            status = _PRESENT
            for s in (t.inner, t.pre, t.post):
                if s is not None and _RANK[s] > _RANK[status]:
                    status = s
        if t.weak and status in (_PRESENT, _UNCERTAIN):
            continue
        out.append(TextFinding(t.concept, status, text[t.start : t.end], t.start, t.end))
    return out


def find_findings(text: str) -> list[TextFinding]:
    """Every mention of a concept of :data:`CONCEPTS` in ``text``, with its status.

    Pure and deterministic; findings are ordered by offset (a longer span first
    when two start together); ``phrase`` is ``text[start:end]``.
    """
    if not text:
        return []
    return _analyse(text)


def present_concepts(text: str, *, include_uncertain: bool = True) -> dict[str, str]:
    """Concepts asserted at least once in ``text``: concept -> "present" or "uncertain".

    "present" wins over "uncertain"; negated and resolved mentions do not count.
    With ``include_uncertain=False`` only "present" concepts are returned.
    """
    result: dict[str, str] = {}
    for f in find_findings(text):
        if f.status == _PRESENT:
            result[f.concept] = _PRESENT
        elif f.status == _UNCERTAIN and include_uncertain:
            result.setdefault(f.concept, _UNCERTAIN)
    return result
