"""``cds-service check``: run scenario files against the service and compare the cards.

Each scenario (see docs/scenarios.md) names the rules that must fire. A
scenario passes when exactly those rules fire and the response is valid CDS
Hooks 2.0. In-process, each scenario is evaluated at its own
``evaluationTime``; a remote service (``--url``) evaluates against its own
clock, which the output points out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from cds_service.commands.boundary import EXIT_INVALID, CommandError, OneLineErrors
from cds_service.commands.card_view import counted, terminal
from cds_service.commands.cds_client import (
    CdsClient,
    InProcessClient,
    RemoteClient,
    discover_services,
    fired_rules,
    remote_client,
    remote_options,
    service_for,
)
from cds_service.engine.knowledge import ServiceDefinition
from cds_service.protocol.validation import validate_response
from cds_service.scenario import (
    Scenario,
    ScenarioError,
    default_fixtures_dir,
    load_scenario,
    scenario_files,
)

RESULT_STYLES = {"pass": "green", "fail": "red", "error": "red"}


@dataclass
class Result:
    name: str
    hook: str
    result: str  # "pass" | "fail" | "error"
    differences: list[str]


class Services:
    """A client per evaluation time (one remote client for all), with its discovery."""

    def __init__(self, remote: RemoteClient | None) -> None:
        self._remote = remote
        self._clients: dict[str | None, tuple[CdsClient, list[ServiceDefinition]]] = {}
        if remote is not None:  # an unreachable service stops the run before any scenario
            self._clients[None] = (remote, discover_services(remote))

    def for_scenario(self, scenario: Scenario) -> tuple[CdsClient, ServiceDefinition]:
        when = None if self._remote else scenario.evaluation_time
        if when not in self._clients:
            client = self._remote or InProcessClient(when)
            self._clients[when] = (client, discover_services(client))
        client, services = self._clients[when]
        return client, service_for(services, scenario.hook, client.where)


def _differences(expected: list[str], fired: list[str]) -> list[str]:
    missing = sorted(set(expected) - set(fired))
    unexpected = sorted(set(fired) - set(expected))
    out = []
    if missing:
        out.append(f"missing: {', '.join(missing)}")
    if unexpected:
        out.append(f"unexpected: {', '.join(unexpected)}")
    return out


def run_scenario(scenario: Scenario, name: str, services: Services) -> Result:
    try:
        client, service = services.for_scenario(scenario)
        reply = client.call(service.id, scenario.request(service))
    except (CommandError, ScenarioError) as exc:
        return Result(name, scenario.hook, "error", [str(exc)])
    if reply.status != 200:
        return Result(name, scenario.hook, "fail",
                      [f"HTTP {reply.status}: {reply.error_line()}"])
    violations = validate_response(reply.body) if reply.body is not None else None
    if violations is None or violations:
        first = (f"{violations[0].pointer}: {violations[0].message}" if violations
                 else "the body is not JSON")
        more = f" (+{len(violations) - 1} more)" if violations and len(violations) > 1 else ""
        return Result(name, scenario.hook, "fail", [f"invalid CDS Hooks response: {first}{more}"])
    differences = _differences(scenario.expected_rules, fired_rules(reply.body))
    return Result(name, scenario.hook, "fail" if differences else "pass", differences)


def _scenario_or_error(path: Path, name: str) -> Scenario | Result:
    try:
        return load_scenario(path)
    except ScenarioError as exc:
        return Result(name, "?", "error", [str(exc).removeprefix(f"{path}: ")])


def _remote_note(remote: RemoteClient, scenarios: list[Scenario]) -> str:
    times = sorted({s.evaluation_time for s in scenarios if s.evaluation_time})
    note = (f"Note: evaluationTime cannot be applied to the service at {remote.where}; it "
            "evaluates against its own clock (CDS_EVALUATION_TIME on the server).")
    if len(times) == 1:
        note += f" These scenarios expect CDS_EVALUATION_TIME={times[0]}."
    elif times:
        note += f" These scenarios use {len(times)} different evaluation times."
    return note


def _table(results: list[Result]) -> Table:
    table = Table(title=None, show_lines=False)
    table.add_column("scenario", overflow="fold")
    table.add_column("hook", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("differences", overflow="fold")
    for r in results:
        table.add_row(Text(r.name), r.hook, Text(r.result.upper(), style=RESULT_STYLES[r.result]),
                      Text("\n".join(r.differences)))
    return table


@click.command(cls=OneLineErrors)
@click.argument("directory", required=False, metavar="[DIR]")
@remote_options
def check(directory: str | None, url: str | None, jwt_key: str | None, jwt_iss: str | None,
          timeout: float) -> None:
    """Run every scenario in DIR (default: the bundled fixtures) and compare the rules fired.

    A scenario fails when other rules fire than its expectedRules, or when the
    response is not valid CDS Hooks 2.0. In-process, each scenario is evaluated
    at its evaluationTime; a service at --url uses its own clock. Exit 0 when
    all pass, 1 otherwise (format: docs/scenarios.md).
    """
    try:
        folder = Path(directory) if directory else default_fixtures_dir()
        files = scenario_files(folder)
    except ScenarioError as exc:
        raise CommandError(f"{exc}; give a folder of scenario files (see docs/scenarios.md)") \
            from None
    if not files:
        raise CommandError(f"{folder}: no scenario files (*.json) in this folder")
    remote = remote_client(url, jwt_key, jwt_iss, timeout)
    loaded = []
    for path in files:
        name = path.relative_to(folder).as_posix().removesuffix(".json")
        loaded.append((name, _scenario_or_error(path, name)))
    console = terminal()
    if remote is not None:
        console.print(_remote_note(remote, [s for _, s in loaded if isinstance(s, Scenario)]),
                      markup=False)
    services = Services(remote)
    results = [item if isinstance(item, Result) else run_scenario(item, name, services)
               for name, item in loaded]
    console.print(_table(results))
    failed = [r for r in results if r.result != "pass"]
    console.print(Text(f"{counted(len(results), 'scenario')}: "
                       f"{len(results) - len(failed)} passed, {len(failed)} failed",
                       style="bold red" if failed else "bold green"))
    if failed:
        raise click.exceptions.Exit(EXIT_INVALID)
