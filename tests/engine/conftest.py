"""Fixtures: an in-memory environment whose every history must replay cleanly at the end."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from runtime.replay import Replayer
from runtime.testing import WorkflowEnvironment


def assert_histories_replay(env: WorkflowEnvironment) -> int:
    """Replay every history the environment recorded with the code that produced it."""
    replayer = Replayer([], data_converter=env.client.data_converter)
    replayer.registry = env.service.registry
    count = 0
    for workflow_id, events in env.histories().items():
        result = replayer.replay_workflow(events, raise_on_error=False)
        assert result.error is None, f"{workflow_id}: {result.error}"
        count += 1
    return count


@pytest_asyncio.fixture(params=["live", "restore"], loop_scope="function")
async def env(request: pytest.FixtureRequest) -> AsyncIterator[WorkflowEnvironment]:
    """Each test runs twice: with live instances, and restoring from history per message."""
    async with WorkflowEnvironment.start_time_skipping(
        restore_each_message=request.param == "restore"
    ) as environment:
        yield environment
        assert_histories_replay(environment)
