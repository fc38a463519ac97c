"""The knowledge in hooks/: loaded once, validated, and errors that name file, line and field."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from cds_service import create_app
from cds_service.engine.knowledge import KnowledgeError, default_knowledge_dir, load_knowledge
from cds_service.engine.ruledoc import render_rules_markdown
from tests.conftest import REPO

CONTRACT_RULES = {
    "urgent-decompression": ("critical", {"patient-view"}),
    "conservative-care-delays-decompression": ("warning", {"order-select", "order-sign"}),
    "postop-infection-workup": ("warning", {"patient-view"}),
    "suspected-epidural-abscess": ("critical", {"patient-view"}),
    "early-postop-imaging-caveat": ("info", {"patient-view"}),
    "ct-insufficient-for-abscess": ("warning", {"order-select", "order-sign"}),
    "fusion-not-routine-at-revision": ("warning", {"order-select", "order-sign"}),
    "asymptomatic-reherniation": ("info", {"patient-view"}),
    "persistent-pain-after-fusion": ("info", {"patient-view"}),
    "consider-cervical-source": ("info", {"patient-view"}),
    "cervical-myelopathy-priority": ("warning", {"patient-view"}),
    "prolonged-opioid-therapy": ("warning", {"patient-view", "order-select", "order-sign"}),
    "seroma-aspiration-not-indicated": ("warning", {"order-select", "order-sign"}),
    "seroma-aspiration-candidate": ("info", {"patient-view"}),
}


@pytest.fixture
def knowledge_copy(tmp_path):
    target = tmp_path / "hooks"
    shutil.copytree(default_knowledge_dir(), target)
    return target


def test_the_rule_catalog_matches_the_contract():
    knowledge = load_knowledge()
    found = {r.id: (r.indicator, set(r.hooks)) for r in knowledge.rules.values()}
    assert found == CONTRACT_RULES


def test_the_opioid_value_set_includes_the_rxnorm_file():
    opioids = load_knowledge().valuesets["opioids"]
    assert opioids.lookup("http://www.nlm.nih.gov/research/umls/rxnorm", "1049621")
    assert opioids.lookup("http://www.whocc.no/atc", "N02AA05")
    assert opioids.lookup("http://snomed.info/sct", "1049621") is None


def test_icd10cm_codes_match_with_or_without_the_dot():
    foot_drop = load_knowledge().valuesets["foot-drop"]
    icd = "http://hl7.org/fhir/sid/icd-10-cm"
    assert foot_drop.lookup(icd, "M21.372").laterality == "left"
    assert foot_drop.lookup(icd, "m21372").laterality == "left"


def test_a_rule_file_with_a_wrong_field_type_stops_start_up_naming_file_line_and_field(
        knowledge_copy, tmp_path):
    rule = knowledge_copy / "rules" / "urgent-decompression.yaml"
    rule.write_text(rule.read_text().replace("indicator: critical", "indicator: urgent"))
    with pytest.raises(KnowledgeError) as error:
        create_app({"KNOWLEDGE_DIR": str(knowledge_copy),
                    "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite'}"})
    message = str(error.value)
    assert "urgent-decompression.yaml line 3" in message
    assert "/indicator" in message


def test_a_rule_naming_an_unknown_fact_is_refused(knowledge_copy):
    rule = knowledge_copy / "rules" / "asymptomatic-reherniation.yaml"
    rule.write_text(rule.read_text().replace("inclusion: recurrent_lumbar_herniation",
                                             "inclusion: recurent_lumbar_herniation"))
    with pytest.raises(KnowledgeError, match="unknown fact 'recurent_lumbar_herniation'"):
        load_knowledge(knowledge_copy)


def test_a_rule_suggesting_an_unknown_order_is_refused(knowledge_copy):
    rule = knowledge_copy / "rules" / "persistent-pain-after-fusion.yaml"
    rule.write_text(rule.read_text().replace("order: ct-lumbar-wo", "order: ct-lumber-wo"))
    with pytest.raises(KnowledgeError, match=r"/card/suggestions/0/order: unknown order"):
        load_knowledge(knowledge_copy)


def test_a_card_template_syntax_error_is_refused_with_its_field(knowledge_copy):
    rule = knowledge_copy / "rules" / "early-postop-imaging-caveat.yaml"
    rule.write_text(rule.read_text().replace("{{ f.early_postop_mri_finding.days_after }} days "
                                             "after spine surgery", "{{ f.early_postop }"))
    with pytest.raises(KnowledgeError, match=r"/card/summary: template error"):
        load_knowledge(knowledge_copy)


def test_a_warning_rule_without_override_reasons_is_refused(knowledge_copy):
    rule = knowledge_copy / "rules" / "fusion-not-routine-at-revision.yaml"
    text = rule.read_text()
    start = text.index("  override_reasons:")
    end = text.index("evidence:")
    rule.write_text(text[:start] + text[end:])
    with pytest.raises(KnowledgeError, match="needs override_reasons"):
        load_knowledge(knowledge_copy)


def test_invalid_yaml_is_refused_with_its_line(knowledge_copy):
    (knowledge_copy / "rules" / "broken.yaml").write_text("id: broken\ntitle: [unclosed\n")
    with pytest.raises(KnowledgeError, match=r"broken.yaml line \d+: not valid YAML"):
        load_knowledge(knowledge_copy)


def test_a_missing_value_set_is_refused(knowledge_copy):
    (knowledge_copy / "valuesets" / "foot-drop.yaml").unlink()
    with pytest.raises(KnowledgeError, match="missing value sets: foot-drop"):
        load_knowledge(knowledge_copy)


def test_threshold_overrides_apply_and_unknown_names_are_refused():
    assert load_knowledge(threshold_overrides={"crp_mg_per_l": 5}).thresholds["crp_mg_per_l"] == 5
    with pytest.raises(KnowledgeError, match="unknown threshold 'crp'"):
        load_knowledge(threshold_overrides={"crp": 5})


def test_the_clinical_rules_document_matches_the_rule_files():
    expected = render_rules_markdown(load_knowledge())
    assert (REPO / "docs" / "clinical-rules.md").read_text(encoding="utf-8") == expected, \
        "regenerate with: cds-service rules-doc -o docs/clinical-rules.md"


def test_rules_doc_command_prints_every_rule():
    result = subprocess.run([sys.executable, "-m", "cds_service.cli", "rules-doc"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for rule_id in CONTRACT_RULES:
        assert f"`{rule_id}`" in result.stdout


SEEDS = REPO.parent / "shared" / "seeds"


@pytest.mark.skipif(not SEEDS.is_dir(), reason="shared/seeds is not beside the repository")
def test_no_card_text_repeats_seven_words_of_the_source_documents():
    import re

    source = " ".join(p.read_text(encoding="utf-8") for p in SEEDS.glob("*.txt")).lower()
    source = " ".join(re.findall(r"[a-z0-9%.,'-]+", source))
    shared = {}
    for rule in load_knowledge().rules.values():
        text = f"{rule.raw['card']['summary']} {rule.raw['card']['detail']}".lower()
        text = re.sub(r"\{[{%].*?[}%]\}", " ", text)
        words = re.findall(r"[a-z0-9%.,'-]+", text)
        found = {" ".join(words[i:i + 7]) for i in range(len(words) - 6)
                 if " ".join(words[i:i + 7]) in source}
        if found:
            shared[rule.id] = sorted(found)
    assert shared == {}
