"""``cds-service fire``: a CDS client that calls the service with a patient's record.

The request is built as an EHR would build it: context from the Patient,
prefetch for every key the service declares in discovery, draft orders from
files. The service runs in-process (with ``--at`` as clinical "now") or at
``--url``. The response is validated and its cards are shown.

Exit codes: 0 a valid answer, 1 a response that violates CDS Hooks, 2 a usage
or input error, 3 an HTTP error from the service (or no answer at all).
"""

from __future__ import annotations

import json

import click

from cds_service.commands.boundary import EXIT_INVALID, EXIT_SERVICE, CommandError, OneLineErrors
from cds_service.commands.card_view import counted, show_response, terminal
from cds_service.commands.cds_client import (
    CdsClient,
    InProcessClient,
    discover_services,
    remote_client,
    remote_options,
    service_for,
)
from cds_service.commands.record_files import load_orders, load_patient_bundle
from cds_service.config import ConfigError, parse_instant
from cds_service.protocol.validation import validate_request, validate_response
from cds_service.scenario import HOOKS, ScenarioError, build_request

ORDER_HOOKS = ("order-select", "order-sign")


def _check_usage(hook: str, url: str | None, at: str | None, orders: tuple[str, ...],
                 selections: tuple[str, ...]) -> None:
    if hook not in HOOKS:
        raise CommandError(f"unknown hook {hook!r}; use one of {', '.join(HOOKS)}")
    if at is not None:
        if url is not None:
            raise CommandError("--at cannot be used with --url: a remote service evaluates "
                               "against its own clock (start it with CDS_EVALUATION_TIME)")
        try:
            parse_instant(at, "--at")
        except ConfigError as exc:
            raise CommandError(f"{exc}, e.g. 2026-06-15T12:00:00Z") from None
    if hook in ORDER_HOOKS and not orders:
        raise CommandError(f"the {hook} hook needs draft orders: give one or more "
                           "--order ORDER.json")
    if hook not in ORDER_HOOKS and orders:
        raise CommandError(f"--order applies to the order-select and order-sign hooks, "
                           f"not {hook}")
    if selections and hook != "order-select":
        raise CommandError(f"--select applies to the order-select hook, not {hook}")


def _check_selections(selections: tuple[str, ...], drafts: list[dict]) -> None:
    refs = [f"{o['resourceType']}/{o['id']}" for o in drafts]
    unknown = [s for s in selections if s not in refs]
    if unknown:
        raise CommandError(f"--select {', '.join(unknown)}: not among the draft orders; "
                           f"select from {', '.join(refs)}")


def _request(client: CdsClient, hook: str, resources: list[dict], drafts: list[dict],
             selections: tuple[str, ...], user: str) -> tuple[str, dict]:
    service = service_for(discover_services(client), hook, client.where)
    try:
        request = build_request(service, resources, draft_orders=drafts or None,
                                selections=list(selections) or None, user_id=user)
    except ScenarioError as exc:
        raise CommandError(str(exc)) from None
    problems = validate_request(request)
    if problems:
        raise CommandError(f"the request built from this input is not valid CDS Hooks: "
                           f"{problems[0].pointer}: {problems[0].message}")
    return service.id, request


@click.command(cls=OneLineErrors)
@click.argument("hook")
@click.argument("bundle", metavar="BUNDLE.json")
@remote_options
@click.option("--order", "orders", multiple=True, metavar="ORDER.json",
              help="A draft order (a FHIR resource or a Bundle of them); repeatable.")
@click.option("--select", "selections", multiple=True, metavar="REF",
              help="For order-select: a selected order as Type/id; repeatable "
                   "(default: every draft order).")
@click.option("--json", "as_json", is_flag=True, help="Print the raw response JSON only.")
@click.option("--at", metavar="ISO-TIME", default=None,
              help="Clinical 'now' for an in-process call, e.g. 2026-06-15T12:00:00Z.")
@click.option("--user", default="Practitioner/example", show_default=True,
              help="context.userId of the request.")
def fire(hook: str, bundle: str, url: str | None, jwt_key: str | None, jwt_iss: str | None,
         timeout: float, orders: tuple[str, ...], selections: tuple[str, ...], as_json: bool,
         at: str | None, user: str) -> None:
    """Call the service for HOOK with the patient record in BUNDLE.json and show the cards.

    BUNDLE.json is a FHIR Bundle (collection, searchset, transaction, batch; '-'
    for standard input) with one Patient; urn:uuid references are resolved.
    Exit 0: valid response; 1: response violates CDS Hooks; 2: usage or input
    error; 3: the service answered with an HTTP error (or could not be reached).
    """
    _check_usage(hook, url, at, orders, selections)
    resources, references = load_patient_bundle(bundle)
    drafts = load_orders(orders, references)
    _check_selections(selections, drafts)
    client: CdsClient = remote_client(url, jwt_key, jwt_iss, timeout) or InProcessClient(at)
    service_id, request = _request(client, hook, resources, drafts, selections, user)
    reply = client.call(service_id, request)
    if reply.status != 200:
        raise CommandError(f"{service_id} ({client.where}) answered HTTP {reply.status}: "
                           f"{reply.error_line()}", EXIT_SERVICE)
    if reply.body is None:
        if as_json:
            click.echo(reply.text)
        raise CommandError(f"{service_id} answered 200 with a body that is not JSON; a CDS "
                           "service answers with a JSON object of cards", EXIT_INVALID)
    violations = validate_response(reply.body)
    if as_json:
        click.echo(json.dumps(reply.body, indent=2, ensure_ascii=False))
        if violations:
            raise CommandError(f"the response violates CDS Hooks 2.0 "
                               f"({counted(len(violations), 'problem')}), the first "
                               f"{violations[0].pointer}: {violations[0].message}", EXIT_INVALID)
        return
    show_response(terminal(), f"{service_id} ({client.where}): HTTP {reply.status}",
                  reply.body, violations)
    if violations:
        raise click.exceptions.Exit(EXIT_INVALID)
