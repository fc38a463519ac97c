"""Server-side latency of patient-view with 10, 100, 1 000 and 5 000 prefetched resources.

Prints p50/p95/p99 (milliseconds) of a full request through the Flask app (JSON
parse, validation, prefetch, record index, facts, rules, cards, JSON output) next
to p50/p95/p99 of the raw stdlib ``json.loads`` of the same body, and the ratio of
the two p99s. Targets (shared/PERFORMANCE.md and the
clinical-engine issue): p99 under 25 ms at 1 000 resources; at most 5x the raw
parse at 5 000.

    python bench/patient_view_latency.py [--runs 200] [--sizes 10,100,1000,5000]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cds_service import create_app  # noqa: E402
from cds_service.scenario import build_request, load_scenario  # noqa: E402

SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
PATIENT = "case1-patient"
NOTE = ("Synthetic filler text to bring each resource near the 1.1 KB of a realistic EHR "
        "resource, with narrative, identifiers and metadata. ") * 4


def _meta(i: int) -> dict:
    return {"versionId": "1", "lastUpdated": "2026-06-01T10:00:00Z",
            "source": f"#bench-{i}", "tag": [{"system": "urn:bench", "code": "synthetic"}]}


def filler(i: int, rng: random.Random) -> dict:
    """One of the resource kinds a real chart holds in bulk: vitals, labs, old problems."""
    day = f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    kind = i % 4
    subject = {"reference": f"Patient/{PATIENT}"}
    if kind == 0:
        return {"resourceType": "Observation", "id": f"vital-{i}", "meta": _meta(i),
                "status": "final", "subject": subject, "effectiveDateTime": day,
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                          "observation-category", "code": "vital-signs"}]}],
                "code": {"coding": [{"system": LOINC, "code": "8867-4",
                                     "display": "Heart rate"}], "text": "Heart rate"},
                "valueQuantity": {"value": rng.randint(55, 95), "unit": "/min",
                                  "system": "http://unitsofmeasure.org", "code": "/min"},
                "note": [{"text": NOTE}]}
    if kind == 1:
        return {"resourceType": "Observation", "id": f"lab-{i}", "meta": _meta(i),
                "status": "final", "subject": subject, "effectiveDateTime": day,
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                          "observation-category", "code": "laboratory"}]}],
                "code": {"coding": [{"system": LOINC, "code": "2345-7",
                                     "display": "Glucose [Mass/volume] in Serum or Plasma"}]},
                "valueQuantity": {"value": rng.randint(70, 140), "unit": "mg/dL",
                                  "system": "http://unitsofmeasure.org", "code": "mg/dL"},
                "note": [{"text": NOTE}]}
    if kind == 2:
        return {"resourceType": "Condition", "id": f"cond-{i}", "meta": _meta(i),
                "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/"
                                               "CodeSystem/condition-clinical",
                                               "code": "resolved"}]},
                "code": {"coding": [{"system": SCT, "code": "38341003",
                                     "display": "Hypertensive disorder"}]},
                "subject": subject, "onsetDateTime": day, "note": [{"text": NOTE}]}
    return {"resourceType": "MedicationRequest", "id": f"med-{i}", "meta": _meta(i),
            "status": "completed", "intent": "order", "subject": subject, "authoredOn": day,
            "medicationCodeableConcept": {"coding": [{
                "system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "197361",
                "display": "amlodipine 5 MG Oral Tablet"}]},
            "note": [{"text": NOTE}]}


def payload(size: int, case, service) -> bytes:
    rng = random.Random(size)
    resources = list(case.resources)
    resources += [filler(i, rng) for i in range(max(0, size - len(resources)))]
    return orjson.dumps(build_request(service, resources[:max(size, len(case.resources))]))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--sizes", default="10,100,1000,5000")
    args = parser.parse_args()
    case = load_scenario(ROOT / "fixtures" / "source-case-1.json")
    app = create_app({"EVALUATION_TIME": case.evaluation_time, "DATABASE_URL": "sqlite://"})
    service = app.extensions["cds"].knowledge.services["spine-postop-patient-view"]
    client = app.test_client()
    gc.collect()
    gc.freeze()  # as `cds-service serve` does in each worker
    gc.set_threshold(50_000, 20, 20)
    print(f"{'resources':>9} {'body KB':>8} | {'request p50':>11} {'p95':>7} {'p99':>7} | "
          f"{'json.loads p50':>14} {'p95':>7} {'p99':>7} | {'p99 ratio':>9}  cards")
    for size in (int(s) for s in args.sizes.split(",")):
        body = payload(size, case, service)
        runs = max(20, args.runs // (5 if size >= 5000 else 1))
        parse, latency = [], []
        for _ in range(runs):
            start = time.perf_counter()
            json.loads(body)
            parse.append((time.perf_counter() - start) * 1000)
        for _ in range(3):  # warm-up
            client.post("/cds-services/spine-postop-patient-view", data=body,
                        content_type="application/json")
        for _ in range(runs):
            start = time.perf_counter()
            response = client.post("/cds-services/spine-postop-patient-view", data=body,
                                   content_type="application/json")
            latency.append((time.perf_counter() - start) * 1000)
            gc.collect(0)  # collection between requests, not inside them
        assert response.status_code == 200, response.get_data(as_text=True)[:500]
        cards = sorted(c["source"]["topic"]["code"] for c in response.get_json()["cards"])
        print(f"{size:>9} {len(body) / 1024:>8.0f} | {statistics.median(latency):>11.2f} "
              f"{percentile(latency, 0.95):>7.2f} {percentile(latency, 0.99):>7.2f} | "
              f"{statistics.median(parse):>14.2f} {percentile(parse, 0.95):>7.2f} "
              f"{percentile(parse, 0.99):>7.2f} | "
              f"{percentile(latency, 0.99) / percentile(parse, 0.99):>9.1f}  {','.join(cards)}")


if __name__ == "__main__":
    main()
