"""``chronik timers``: run the standalone timer service (`workers.timer_service`)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

import click

from topics.admin import TopicAdmin
from topics.catalogue import TopicNames
from workers.cli_context import CliContext, pass_cli
from workers.cli_worker import usable_state_dir
from workers.membership import Member
from workers.timer_service import TimerService, TimerServiceConfig


@click.command(short_help="Run the standalone timer service (with worker --no-timers).")
@click.option("--worker-id", envvar="CHRONIK_WORKER_ID", default=None,
              help="Stable id of this replica (transactional id, state directory).")  # fmt: skip
@click.option("--state-dir", envvar="CHRONIK_STATE_DIR", type=click.Path(path_type=Path),
              default=None, help="Where the due-time indexes live (a cache of Kafka) "
              "[default: ./.chronik/state].")  # fmt: skip
@pass_cli
def timers(ctx: CliContext, *, worker_id: str | None, state_dir: Path | None) -> None:
    """Fire due timers of the namespace; pair with `chronik worker --no-timers`."""
    state_dir = usable_state_dir(state_dir)
    ctx.ensure_kafka()
    member = Member.resolve(ctx.bootstrap_servers, ctx.namespace, ctx.kafka_config, worker_id)
    names = TopicNames(ctx.namespace)
    TopicAdmin(member.client_config()).require(ctx.namespace, [names.timers, names.inbox])
    service = TimerService(
        TimerServiceConfig(member=member, state_dir=state_dir / member.worker_id)
    )
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service.run(stop)
