"""``cds-service rules-doc``: the clinical rules as Markdown, for review."""

from __future__ import annotations

import os

import click

from cds_service.commands import fail


@click.command("rules-doc")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Write to this file instead of standard output.")
def rules_doc(output: str | None) -> None:
    """Print the clinical rules, criteria, thresholds and evidence as Markdown."""
    from cds_service.engine.knowledge import KnowledgeError, load_knowledge
    from cds_service.engine.ruledoc import render_rules_markdown

    try:
        text = render_rules_markdown(load_knowledge(os.environ.get("CDS_KNOWLEDGE_DIR")))
    except KnowledgeError as exc:
        fail(str(exc))
    if output:
        with open(output, "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        click.echo(text, nl=False)
