"""Free-text imaging findings: targets, negation, uncertainty, resolution, scope."""

from __future__ import annotations

import time

import pytest

from cds_service.engine import findings_text as ft
from cds_service.engine.findings_text import (
    CONCEPTS,
    TextFinding,
    find_findings,
    present_concepts,
)

FC, RIM, NC, DH = CONCEPTS
P, U = "present", "uncertain"

# (text, expected present_concepts(text)) -- the default, uncertain included.
PRESENT_CASES: list[tuple[str, dict[str, str]]] = [
    # --- fluid collection: wordings -------------------------------------------
    ("Postoperative seroma measuring 4 cm.", {FC: P}),
    ("Post-operative seroma in the laminectomy bed.", {FC: P}),
    ("Post-surgical seroma.", {FC: P}),
    ("Fluid collection in the surgical bed.", {FC: P}),
    ("Fluid-collections at L4-5 and L5-S1.", {FC: P}),
    ("Fluid pocket posterior to the thecal sac.", {FC: P}),
    ("Loculated fluid in the paraspinal muscles.", {FC: P}),
    ("Pseudomeningocele at L4-5.", {FC: P}),
    ("Small pseudo-meningocele.", {FC: P}),
    ("Small epidural haematoma.", {FC: P}),  # British spelling
    ("Postoperative hematoma.", {FC: P}),
    ("Epidural abscess extending from L3 to L5.", {FC: P}),  # an abscess is a collection
    ("CSF collection.", {FC: P}),
    ("Seroma/abscess in the surgical bed.", {FC: P}),
    ("NO FLUID COLLECTION. SEROMA PRESENT.", {FC: P}),  # upper case, two sentences
    # --- rim enhancement ----------------------------------------------------------
    ("Collection with rim enhancement.", {FC: P, RIM: P}),
    ("Ring-enhancing collection.", {FC: P, RIM: P}),
    ("Rim enhancing seroma.", {FC: P, RIM: P}),
    ("Peripherally enhancing fluid collection.", {FC: P, RIM: P}),
    ("Enhancing fluid collection.", {FC: P, RIM: P}),
    ("Enhancing collection in the laminectomy bed.", {FC: P, RIM: P}),
    ("Enhancement surrounding the collection.", {FC: P, RIM: P}),
    ("Thin rim of enhancement around the seroma.", {FC: P, RIM: P}),
    ("Fluid collection with enhancing wall.", {FC: P, RIM: P}),
    ("The collection enhances peripherally.", {FC: P, RIM: P}),
    ("Peripheral enhancement.", {RIM: P}),
    ("Non-enhancing fluid collection.", {FC: P}),  # denies enhancement, not the collection
    ("Nonenhancing collection.", {FC: P}),
    ("Fluid collection without enhancement.", {FC: P}),
    ("No enhancement around the collection.", {FC: P}),
    ("The collection does not enhance.", {FC: P}),
    ("Enhancement of the L5 nerve root.", {}),  # not rim enhancement
    ("Enhancing granulation tissue and epidural fibrosis.", {}),
    # --- neural compression ---------------------------------------------------------
    ("Mass effect on the thecal sac.", {NC: P}),
    ("Cord compression.", {NC: P}),
    ("Compression of the cauda equina.", {NC: P}),
    ("Effacement of the ventral thecal sac.", {NC: P}),
    ("Displacement of the traversing right S1 nerve root.", {NC: P}),
    ("Impingement on the exiting L4 nerve root.", {NC: P}),
    ("Seroma compressing the left L5 nerve root.", {FC: P, NC: P}),
    ("The thecal sac appears mildly effaced.", {NC: P}),
    ("Collection abutting the nerve root.", {FC: P}),  # contact is not compression
    ("Mild effacement of the left lateral recess.", {}),
    # --- disc herniation -------------------------------------------------------------
    ("Herniated disc at L5-S1.", {DH: P}),
    ("Disc extrusion at L4-5.", {DH: P}),
    ("Extruded disc fragment.", {DH: P}),
    ("Disk protrusion.", {DH: P}),
    ("Re-herniation at L4-5.", {DH: P}),
    ("Reherniation.", {DH: P}),
    ("Recurrent left paracentral disc herniation.", {DH: P}),
    ("Herniated nucleus pulposus.", {DH: P}),
    ("HNP L5-S1.", {DH: P}),
    ("Disc prolapse.", {DH: P}),
    ("Left paracentral extrusion at L4-5.", {DH: P}),
    ("Medial screw protrusion into the canal.", {}),  # hardware, not disc
    ("Herniation of nerve roots into the pseudomeningocele.", {FC: P}),
    # --- negation: pre-triggers --------------------------------------------------------
    ("No fluid collection.", {}),
    ("No abscess, hematoma or seroma.", {}),
    ("Negative for abscess.", {}),
    ("Free of fluid collection.", {}),
    ("Absence of rim enhancement.", {}),
    ("No evidence of recurrent disc herniation.", {}),
    ("There is no seroma.", {}),
    ("No definite abscess.", {}),
    ("Without evidence of cord compression.", {}),
    ("No significant mass effect upon the thecal sac.", {}),
    ("No nerve root compression.", {}),
    ("Not consistent with abscess.", {}),
    ("No findings to suggest abscess.", {}),
    ("No rim-enhancing fluid collection to suggest abscess.", {}),
    ("No enhancing collection.", {}),
    ("Disc bulge without herniation.", {}),
    # --- negation: post-triggers -------------------------------------------------------
    ("A fluid collection is not seen.", {}),
    ("Fluid collection is not identified.", {}),
    ("Seroma not visualised.", {}),
    ("Peripheral enhancement is absent.", {}),
    ("Abscess is unlikely.", {}),
    ("The L5 nerve root is not compressed.", {}),
    # --- uncertainty ------------------------------------------------------------------
    ("Possible small seroma.", {FC: U}),
    ("Probable pseudomeningocele.", {FC: U}),
    ("Questionable small fluid collection.", {FC: U}),
    ("Findings suspicious for epidural abscess.", {FC: U}),
    ("Concerning for abscess.", {FC: U}),
    ("Cannot exclude abscess.", {FC: U}),
    ("Abscess cannot be excluded.", {FC: U}),
    ("Abscess is not excluded.", {FC: U}),
    ("Cannot rule out recurrent disc herniation.", {DH: U}),
    ("Findings may be consistent with abscess.", {FC: U}),
    ("Suspected recurrent disc herniation.", {DH: U}),
    ("Rule out abscess.", {FC: U}),
    ("?abscess", {FC: U}),
    ("Seroma?", {FC: U}),
    ("Recurrent disc herniation versus epidural fibrosis.", {DH: U}),
    ("Differential includes abscess and seroma.", {FC: U}),
    ("Collection may represent seroma or abscess.", {FC: P}),  # the collection itself is seen
    ("Seroma versus abscess.", {FC: P}),  # a collection either way
    ("Seroma vs. abscess.", {FC: P}),
    ("Cannot exclude superimposed infection of the seroma.", {FC: P}),
    # --- affirmation: "likely" asserts --------------------------------------------------
    ("Likely postoperative seroma.", {FC: P}),
    ("Most likely recurrent disc herniation.", {DH: P}),
    ("Findings consistent with recurrent disc herniation.", {DH: P}),
    ("Abscess less likely.", {FC: U}),
    # --- resolution and history --------------------------------------------------------
    ("Resolved seroma.", {}),
    ("The seroma has resolved.", {}),
    ("Hematoma, now resolved.", {}),
    ("Interval resolution of the epidural hematoma.", {}),
    ("The previously seen seroma is no longer visualized.", {}),
    ("There is no longer a fluid collection.", {}),
    ("Seroma and hematoma have resolved.", {}),
    ("Thecal sac compression has resolved.", {}),
    ("History of disc herniation.", {}),
    ("Status post L4-5 microdiscectomy for disc herniation.", {}),
    ("Status post evacuation of epidural hematoma.", {}),
    ("Abscess was drained; residual collection present.", {FC: P}),
    ("Abscess was not drained.", {FC: P}),
    ("Possible infected seroma.", {FC: P}),  # the hedge is on the infection
    ("The seroma is not infected.", {FC: P}),
    # --- still there: smaller, unchanged, resolving -----------------------------------
    ("Partially resolved seroma.", {FC: P}),
    ("Resolving seroma.", {FC: P}),
    ("The seroma has not resolved.", {FC: P}),
    ("Hematoma has decreased in size.", {FC: P}),
    ("No interval change in the postoperative seroma.", {FC: P}),
    ("No significant interval change in size of the seroma.", {FC: P}),
    ("The collection should be drained.", {FC: P}),
    ("MRI lumbar spine without and with contrast shows a fluid collection.", {FC: P}),
    ("MRI L-spine w/o and w/ contrast: seroma.", {FC: P}),
    ("MRI without contrast: seroma.", {FC: P}),
    # --- terminators and scope ----------------------------------------------------------
    ("No abscess, but a small seroma is present.", {FC: P}),
    ("No abscess; small seroma.", {FC: P}),
    ("No abscess. Small seroma.", {FC: P}),
    ("No abscess however there is a small seroma.", {FC: P}),
    ("No evidence of abscess although a seroma is seen.", {FC: P}),
    ("No abscess, which would be unusual for this seroma.", {FC: P}),
    ("No abscess and a small seroma is present.", {FC: P}),
    ("No abscess, likely seroma.", {FC: P}),
    ("No acute fracture or malalignment, small seroma.", {FC: P}),
    (
        "No evidence of recurrent herniation; fluid collection with peripheral enhancement.",
        {FC: P, RIM: P},
    ),
    ("No fluid collection or compression of the thecal sac.", {}),
    ("No fluid collection in the surgical bed or compression of the nerve roots.", {}),
    ("No compression of the nerve root by the seroma.", {FC: P}),
    ("No fluid collection with peripheral enhancement.", {}),
    ("Seroma in the laminectomy bed has resolved, but a new abscess is present.", {FC: P}),
    ("Possible abscess, no seroma.", {FC: U}),
    ("No abscess.\n\nSeroma.", {FC: P}),
    ("IMPRESSION:\n1. No abscess\n2. Seroma", {FC: P}),
    (
        "Status post L5-S1 microdiscectomy. Recurrent disc extrusion at L5-S1 compressing the "
        "traversing left S1 nerve root.",
        {DH: P, NC: P},
    ),
    (
        "Collection with thin peripheral enhancement, likely seroma; cannot exclude abscess.",
        {FC: P, RIM: P},
    ),
    # --- nothing to find ------------------------------------------------------------
    ("", {}),
    ("   ", {}),
    ("Mild facet arthropathy.", {}),
    ("Mild facet arthropathy at L3-4 and L5-S1. Vertebral body heights are maintained.", {}),
]


@pytest.mark.parametrize(("text", "expected"), PRESENT_CASES, ids=lambda v: repr(v)[:60])
def test_present_concepts(text: str, expected: dict[str, str]) -> None:
    assert present_concepts(text) == expected


def test_case_table_is_large_enough() -> None:
    assert len(PRESENT_CASES) >= 60
    covered = {c for _, exp in PRESENT_CASES for c in exp}
    assert covered == set(CONCEPTS)


# (text, concept -> sorted statuses of every mention)
STATUS_CASES: list[tuple[str, dict[str, list[str]]]] = [
    ("No abscess, but a small seroma is present.", {FC: ["negated", "present"]}),
    (
        "No evidence of recurrent herniation; fluid collection with peripheral enhancement.",
        {DH: ["negated"], FC: ["present"], RIM: ["present"]},
    ),
    ("Non-enhancing fluid collection.", {RIM: ["negated"], FC: ["present"]}),
    ("Fluid collection without enhancement.", {RIM: ["negated"], FC: ["present"]}),
    ("Abscess cannot be excluded.", {FC: ["uncertain"]}),
    ("The previously seen seroma is no longer visualized.", {FC: ["resolved"]}),
    ("Interval resolution of the seroma.", {FC: ["resolved"]}),
    ("History of disc herniation. No recurrent disc herniation.", {DH: ["negated", "resolved"]}),
    ("The thecal sac is not compressed by the seroma.", {NC: ["negated"], FC: ["present"]}),
    ("Large seroma, no longer compressing the thecal sac.", {FC: ["present"], NC: ["resolved"]}),
    ("Possible abscess, no seroma.", {FC: ["negated", "uncertain"]}),
    ("Rim-enhancing collection concerning for abscess.",
     {RIM: ["present"], FC: ["present", "uncertain"]}),
]


@pytest.mark.parametrize(("text", "expected"), STATUS_CASES, ids=lambda v: repr(v)[:60])
def test_statuses(text: str, expected: dict[str, list[str]]) -> None:
    got: dict[str, list[str]] = {}
    for f in find_findings(text):
        got.setdefault(f.concept, []).append(f.status)
    assert {k: sorted(v) for k, v in got.items()} == expected


def test_include_uncertain_false_keeps_only_present() -> None:
    text = "Fluid collection with rim enhancement; possible recurrent disc herniation."
    assert present_concepts(text) == {FC: P, RIM: P, DH: U}
    assert present_concepts(text, include_uncertain=False) == {FC: P, RIM: P}


def test_present_wins_over_uncertain() -> None:
    text = "Possible abscess. Postoperative seroma."
    assert [f.status for f in find_findings(text)] == ["uncertain", "present"]
    assert present_concepts(text) == {FC: P}


def test_offsets_and_phrases() -> None:
    text = "No abscess, but a small seroma compressing the left L5 nerve root."
    found = find_findings(text)
    assert found == [
        TextFinding(FC, "negated", "abscess", 3, 10),
        TextFinding(FC, "present", "seroma", 24, 30),
        TextFinding(NC, "present", "compressing the left L5 nerve root", 31, 65),
    ]
    for f in found:
        assert text[f.start : f.end] == f.phrase


def test_offsets_keep_original_case_and_span_two_concepts() -> None:
    text = "IMPRESSION: Enhancing Fluid Collection."
    found = find_findings(text)
    assert [(f.concept, f.phrase, f.start, f.end) for f in found] == [
        (RIM, "Enhancing Fluid Collection", 12, 38),
        (FC, "Fluid Collection", 22, 38),
    ]


def test_offsets_survive_characters_that_change_length_when_lowered() -> None:
    text = "İİ seroma"  # "İ".lower() is two characters
    (f,) = find_findings(text)
    assert (f.phrase, f.start, f.end) == ("seroma", 3, 9)


def test_every_finding_is_well_formed() -> None:
    for text, _ in PRESENT_CASES:
        for f in find_findings(text):
            assert f.concept in CONCEPTS
            assert f.status in {"present", "negated", "uncertain", "resolved"}
            assert text[f.start : f.end] == f.phrase


def test_findings_are_frozen() -> None:
    (f,) = find_findings("Seroma.")
    with pytest.raises(AttributeError):
        f.status = "negated"  # type: ignore[misc]


def test_pure_and_repeatable() -> None:
    text = "No abscess; fluid collection with peripheral enhancement."
    assert find_findings(text) == find_findings(text) == find_findings(text)


REPORT = (
    "MRI LUMBAR SPINE WITHOUT AND WITH CONTRAST. Status post left L4-5 microdiscectomy. "
    "There is a 3.2 x 1.5 cm fluid collection in the laminectomy bed with thin peripheral "
    "enhancement, which may represent a postoperative seroma; abscess cannot be excluded. "
    "No recurrent disc herniation at L4-5. The left L5 nerve root is not compressed. Mild facet "
    "arthropathy at L3-4 and L5-S1 without significant central canal stenosis. Interval "
    "resolution of the previously seen epidural hematoma. No cord compression. Vertebral body "
    "heights are maintained. Impression: postoperative fluid collection with rim enhancement."
)


def test_whole_report() -> None:
    statuses = {(f.concept, f.phrase.lower()): f.status for f in find_findings(REPORT)}
    assert statuses[(FC, "fluid collection")] == "present"
    assert statuses[(FC, "postoperative seroma")] == "uncertain"
    assert statuses[(FC, "abscess")] == "uncertain"
    assert statuses[(DH, "recurrent disc herniation")] == "negated"
    assert statuses[(NC, "nerve root is not compressed")] == "negated"
    assert statuses[(FC, "hematoma")] == "resolved"
    assert statuses[(NC, "cord compression")] == "negated"
    assert present_concepts(REPORT) == {FC: P, RIM: P}


def test_dispatch_matches_exhaustive_reference() -> None:
    """The fast scan tries a pattern only at its lead words; the reference tries every
    pattern at every word. They must agree on every text here."""
    texts = [t for t, _ in PRESENT_CASES] + [t for t, _ in STATUS_CASES] + [REPORT]
    for text in texts:
        assert ft._analyse(text) == ft._analyse(text, reference=True), text


def test_timing_report(capsys: pytest.CaptureFixture[str]) -> None:
    """Not an assertion on speed: prints microseconds per call (best of 20 batches, to
    ride out a busy machine) on a 600-character report and on a short code.text."""

    def per_call(text: str, batch: int = 100) -> float:
        find_findings(text)
        best = float("inf")
        for _ in range(20):
            t0 = time.perf_counter()
            for _ in range(batch):
                find_findings(text)
            best = min(best, (time.perf_counter() - t0) / batch * 1e6)
        return best

    report = REPORT[:600]
    long_us = per_call(report)
    short_us = per_call("Postoperative fluid collection with rim enhancement")
    with capsys.disabled():
        print(
            f"\nfind_findings: {long_us:.0f} us per call on a {len(report)}-character report, "
            f"{short_us:.0f} us on a short code.text"
        )
    assert long_us > 0 and short_us > 0


_VOCAB = (
    "no not without w/o nor negative for free of absence evidence of signs findings seen "
    "identified absent excluded ruled out unlikely cannot can't be exclude rule possible "
    "probable probably questionable suspicious concerning worrisome may represent could "
    "suspected less likely versus vs. ? ; . , : likely consistent with compatible in keeping "
    "there is are was has have resolved resolution interval history of status post s/p "
    "following drainage drained evacuated partially resolving change significant but however "
    "although which except aside from fluid collection collections seroma postoperative "
    "post-operative pseudomeningocele hematoma haematoma abscess loculated rim ring-enhancing "
    "peripheral peripherally enhancing enhancement enhances non-enhancing nonenhancing wall "
    "thecal sac cord cauda equina nerve root roots compression compressing effacement effaced "
    "displaced mass effect on the left L5 disc disk herniation herniated extrusion extruded "
    "protrusion recurrent re-herniation HNP paracentral screw a an and or by to suggest\n"
).split(" ")


def test_dispatch_matches_reference_on_random_text() -> None:
    import random

    rng = random.Random(20240601)
    for _ in range(300):
        text = " ".join(rng.choice(_VOCAB) for _ in range(rng.randint(3, 25)))
        fast = ft._analyse(text)
        assert fast == ft._analyse(text, reference=True), text
        for f in fast:
            assert text[f.start : f.end] == f.phrase
