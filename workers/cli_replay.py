"""``chronik replay``: replay recorded histories against the code of MODULES.

The guard before a deploy, as Temporal's replayer is: changed workflow code that cannot
follow the histories of runs still open would fail their workflow tasks once deployed
(they wait, stuck, for a fix). Replaying those histories first, against the new code,
names each such run and the first event the code disagrees with. Histories come from
files (a ``chronik workflow history`` or ``chronik history tail`` capture) or from Kafka:
named workflow ids, or every open run of the types the modules define, asked of their
owners — or, with ``--from-topic``, read from the history topic (`workers.history_topic`),
because a full-stop deploy has no owner running to ask. Of each history
the newest run is replayed, as a worker replays it; the runs it continued from are closed
and no deploy makes them fail a task (``--all-runs`` replays them too).

One JSON line per workflow on stdout; exit code 1 when any history does not replay, 0 when
all do (2 for a bad argument, as everywhere).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import click

from runtime.client import Client
from runtime.errors import ChronikError
from runtime.events import HistoryEvent, WorkflowStarted
from runtime.history_json import history_from_json
from runtime.messages import WorkflowStatus
from runtime.replay import Replayer, ReplayResult
from topics.catalogue import TopicNames
from workers.cli_client import RequestNotServed
from workers.cli_context import CliContext, pass_cli
from workers.cli_worker import load_definitions
from workers.history_topic import read_histories

EXIT_DOES_NOT_REPLAY = 1


HISTORY_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command()
@click.argument("modules", nargs=-1, required=True)
@click.option(
    "--history", "files", multiple=True, type=HISTORY_FILE,
    help="A captured history (JSON, or JSON lines of one or many workflows); repeatable.",
)  # fmt: skip
@click.option(
    "--workflow-id", "workflow_ids", multiple=True,
    help="Fetch this workflow's history from Kafka (its owner answers); repeatable.",
)  # fmt: skip
@click.option(
    "--open", "open_runs", is_flag=True,
    help="Fetch the history of every open run whose type MODULES define.",
)  # fmt: skip
@click.option(
    "--from-topic", is_flag=True,
    help="With --open/--workflow-id: read the histories from <ns>.history, asking no worker "
    "(for a deploy with every worker stopped; reads each partition the ids are on to its end).",
)  # fmt: skip
@click.option("--type", "workflow_type", default=None, help="With --open: only this type.")
@click.option(
    "--all-runs", is_flag=True,
    help="Replay every run of each history, not just the newest (the one a worker replays).",
)  # fmt: skip
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="With --open: at most this many."
)
@pass_cli
def replay(
    ctx: CliContext,
    *,
    modules: tuple[str, ...],
    files: tuple[Path, ...],
    workflow_ids: tuple[str, ...],
    open_runs: bool,
    from_topic: bool,
    workflow_type: str | None,
    limit: int | None,
    all_runs: bool,
) -> None:
    """Replay recorded histories against the workflows of MODULES.

    Each line says whether the workflow's history replays ("ok") and, if not, the first
    event the code disagrees with. Run it against production histories before deploying
    changed workflow code.
    """
    if from_topic and not (workflow_ids or open_runs):
        raise click.UsageError("--from-topic is where --open and --workflow-id read from: add one")
    if not (files or workflow_ids or open_runs):
        raise click.UsageError("nothing to replay: give --history, --workflow-id or --open")
    if (workflow_type or limit) and not open_runs:
        raise click.UsageError("--type and --limit choose among open runs: add --open")
    workflows, _ = load_definitions(modules)
    if not workflows:
        raise click.BadParameter(f"{' '.join(modules)} define no workflows", param_hint="MODULES")
    replayer = Replayer(workflows)
    if workflow_type is not None and replayer.registry.get(workflow_type) is None:
        raise click.BadParameter(
            f"MODULES define no workflow {workflow_type!r} "
            f"(they define {', '.join(replayer.registry.names())})",
            param_hint="'--type'",
        )
    histories = [*_from_files(files)]
    if workflow_ids or open_runs:
        types = [workflow_type] if workflow_type else replayer.registry.names()

        async def fetch(client: Client) -> list[list[HistoryEvent]]:
            ids = list(workflow_ids)
            if open_runs:
                ids += [i for i in await _open_ids(client, types, limit) if i not in ids]
            if from_topic:
                config, names = ctx.client_config(), TopicNames(ctx.namespace)
                return await asyncio.to_thread(read_histories, config, names, ids)
            return [list(await client.get_workflow_handle(i).fetch_history()) for i in ids]

        try:
            histories += ctx.with_client(fetch)
        except ChronikError as error:  # an unknown workflow id, no owner answering
            raise RequestNotServed(str(error)) from None
    results = replayer.replay_workflows(histories, all_runs=all_runs)
    for result in results:
        sys.stdout.write(json.dumps(_line(result)) + "\n")
    failed = sum(result.error is not None for result in results)
    click.echo(f"replayed {len(results)} workflows: {failed} do not replay", err=True)
    if failed:
        sys.exit(EXIT_DOES_NOT_REPLAY)


def _from_files(files: Iterable[Path]) -> Iterable[list[HistoryEvent]]:
    """Each workflow id's events in each file, in their order: a ``history tail``
    capture interleaves many workflows.

    Refused: a file with no events, and a workflow whose events begin after its run's
    start (a tail begun while it ran). Replay runs code from a start; without one nothing
    is checked, and that must not pass for a history that replays.
    """
    for path in files:
        try:
            events = history_from_json(path.read_text(encoding="utf-8"))
        except (ValueError, KeyError, TypeError) as error:
            raise click.BadParameter(
                f"{path} is not a Chronik history: {error}", param_hint="'--history'"
            ) from None
        if not events:
            raise click.BadParameter(f"{path} holds no history events", param_hint="'--history'")
        by_id: dict[str, list[HistoryEvent]] = {}
        for event in events:
            by_id.setdefault(event.workflow_id, []).append(event)
        partial = [i for i, e in by_id.items() if not isinstance(e[0].attributes, WorkflowStarted)]
        if partial:
            raise click.BadParameter(
                f"{path}: the events of {', '.join(partial[:3])}"
                f"{f' and {len(partial) - 3} more' if len(partial) > 3 else ''} begin after "
                "the run's start, so nothing could be checked; capture with `chronik history "
                "tail --from-beginning` or `chronik workflow history ID`",
                param_hint="'--history'",
            )
        yield from by_id.values()


async def _open_ids(client: Client, types: Sequence[str], limit: int | None) -> list[str]:
    ids: list[str] = []
    async for record in client.list_workflows(status=WorkflowStatus.RUNNING):
        if record.workflow_type in types:
            ids.append(record.workflow_id)
            if limit is not None and len(ids) == limit:
                break
    return ids


def _line(result: ReplayResult) -> dict[str, object]:
    return {
        "workflow_id": result.workflow_id,
        "ok": result.error is None,
        "events": result.events,
        "runs": result.runs,
        "status": result.status.value if result.status else None,
        "error": str(result.error) if result.error is not None else None,
    }
