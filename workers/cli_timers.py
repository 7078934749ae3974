"""``chronik timers``: run the standalone timer service (`workers.timer_service`)."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from types import FrameType

import click

from workers.cli_context import CliContext, pass_cli
from workers.kafka_host import default_state_dir, default_worker_id
from workers.timer_service import TimerService, TimerServiceConfig


@click.command()
@click.option("--worker-id", envvar="CHRONIK_WORKER_ID", default=None,
              help="Stable id of this replica (transactional id, state directory).")  # fmt: skip
@click.option("--state-dir", envvar="CHRONIK_STATE_DIR", type=click.Path(path_type=Path),
              default=None, help="Where the due-time indexes live.")  # fmt: skip
@pass_cli
def timers(ctx: CliContext, *, worker_id: str | None, state_dir: Path | None) -> None:
    """Fire due timers of the namespace; pair with `chronik worker --no-timers`."""
    ctx.ensure_kafka()
    stable_id = worker_id is not None
    worker_id = worker_id or default_worker_id()
    service = TimerService(
        TimerServiceConfig(
            bootstrap_servers=ctx.bootstrap_servers,
            namespace=ctx.namespace,
            state_dir=(state_dir or default_state_dir()) / worker_id,
            worker_id=worker_id,
            kafka=dict(ctx.kafka_config),
            stable_id=stable_id or "CHRONIK_WORKER_ID" in os.environ,
        )
    )
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service.run(stop)
