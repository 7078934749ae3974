"""``chronik workflow ...`` against worker processes: what an operator types in a shell."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.integration.conftest import Launcher
from tests.integration.processes import ChronikProcess, run_chronik
from workers.cli import cli

pytestmark = pytest.mark.kafka

MODULES = ("examples.order", "examples.transfer", "examples.approval")


@pytest.fixture
def cli_worker(launch: Launcher) -> ChronikProcess:
    return launch.worker(
        role="all",
        worker_id="cli",
        modules=MODULES,
    )


async def _chronik(bootstrap: str, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    return await run_chronik(bootstrap, namespace, "workflow", *args)


async def test_start_wait_describe_and_history(
    kafka_bootstrap: str, topics_ready: str, cli_worker: ChronikProcess
) -> None:
    done = await _chronik(
        kafka_bootstrap, topics_ready,
        "start", "process_order", "--id", "cli-1", "-q", "orders", "--arg", '"C-1"', "--wait",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "result": ["payment-C-1", "reservation-C-1", "shipment-C-1", "confirmation-C-1"]
    }
    described = await _chronik(kafka_bootstrap, topics_ready, "describe", "cli-1")
    assert json.loads(described.stdout)["status"] == "completed"
    history = await _chronik(kafka_bootstrap, topics_ready, "history", "cli-1")
    types = [json.loads(line)["type"] for line in history.stdout.splitlines()]
    assert types[0] == "WorkflowStarted"
    assert types[-1] == "WorkflowCompleted"


async def test_describe_says_which_activity_a_run_is_stuck_retrying_and_why(
    kafka_bootstrap: str, topics_ready: str, launch: Launcher
) -> None:
    modules = ("tests.integration.retrying_workflows",)
    launch.worker(role="all", worker_id="retrying", modules=modules)
    started = await _chronik(
        kafka_bootstrap, topics_ready, "start", "charge", "--id", "cli-charge", "-q", "orders",
        "--arg", '"4242"',
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    deadline = time.monotonic() + 60
    while True:  # until the first attempt failed and the run waits for the second
        described = await _chronik(kafka_bootstrap, topics_ready, "describe", "cli-charge")
        assert described.returncode == 0, described.stderr
        status = json.loads(described.stdout)
        pending = status["pending_activities"]
        if pending and pending[0]["state"] == "backoff":
            break
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.5)
    assert status["status"] == "running"
    [activity] = pending
    assert (activity["activity_type"], activity["task_queue"]) == ("charge_card", "orders")
    assert (activity["attempt"], activity["maximum_attempts"]) == (1, 3)
    assert activity["last_failure"]["message"] == "card 4242 declined"
    assert activity["last_failure"]["type"] == "CardDeclined"
    waits_ms = activity["next_attempt_time_ms"] - activity["attempt_scheduled_time_ms"]
    assert 3_600_000 <= waits_ms < 3_700_000
    assert (status["pending_timers"], status["pending_children"]) == ([], [])
    ended = await _chronik(kafka_bootstrap, topics_ready, "terminate", "cli-charge")
    assert ended.returncode == 0, ended.stderr
    after = await _chronik(kafka_bootstrap, topics_ready, "describe", "cli-charge")
    assert json.loads(after.stdout)["pending_activities"] == []


async def test_signal_query_and_result_of_a_waiting_workflow(
    kafka_bootstrap: str, topics_ready: str, cli_worker: ChronikProcess
) -> None:
    started = await _chronik(
        kafka_bootstrap, topics_ready, "start", "Approval", "--id", "ap-1", "-q", "orders",
        "--arg", '"R-9"',
    )  # fmt: skip
    assert json.loads(started.stdout)["workflow_id"] == "ap-1"
    waiting = await _chronik(kafka_bootstrap, topics_ready, "query", "ap-1", "status")
    assert json.loads(waiting.stdout) == "waiting"
    pending = await _chronik(kafka_bootstrap, topics_ready, "result", "ap-1", "--timeout", "1")
    assert (pending.returncode, pending.stderr) == (
        3,
        "Error: workflow 'ap-1' did not close within 1s "
        "(`chronik workflow describe ap-1` says where it stands)\n",
    )
    # A misspelled signal is refused, saying so, instead of "accepted" and dropped.
    typo = await _chronik(kafka_bootstrap, topics_ready, "signal", "ap-1", "aprove", "--arg", '"x"')
    assert typo.returncode == 2, typo.stderr
    assert typo.stderr.strip().splitlines() == [
        "Error: workflow Approval has no signal 'aprove' (its signals: 'approve'; did you mean "
        "'approve'?): workflow 'ap-1' did not take it, nothing was recorded"
    ]
    updated = await _chronik(
        kafka_bootstrap, topics_ready, "update", "ap-1", "add_reviewer", "--arg", '"bob"'
    )
    assert json.loads(updated.stdout) == {"result": ["bob"]}, updated.stderr
    refused = await _chronik(
        kafka_bootstrap, topics_ready, "update", "ap-1", "add_reviewer", "--arg", '" "'
    )
    assert refused.returncode == 2 and "a reviewer needs a name" in refused.stderr
    signalled = await _chronik(
        kafka_bootstrap, topics_ready,
        "signal", "ap-1", "approve", "--arg", '"alice"', "--request-id", "sig-ap-1",
    )  # fmt: skip
    assert signalled.returncode == 0, signalled.stderr
    again = await _chronik(  # a retried script: delivered once, accepted again
        kafka_bootstrap, topics_ready,
        "signal", "ap-1", "approve", "--arg", '"alice"', "--request-id", "sig-ap-1",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert signalled.returncode == 0, signalled.stderr
    result = await _chronik(kafka_bootstrap, topics_ready, "result", "ap-1")
    assert json.loads(result.stdout) == {"result": "R-9 approved by alice"}


async def test_signal_with_start_starts_a_run_or_signals_the_open_one(
    kafka_bootstrap: str, topics_ready: str, cli_worker: ChronikProcess
) -> None:
    # No run of the id: one starts, and its signal is there before its code runs.
    done = await _chronik(
        kafka_bootstrap, topics_ready, "start", "Approval", "--id", "sws-1", "-q", "orders",
        "--arg", '"R-1"', "--signal", "approve", "--signal-arg", '"carol"', "--wait",
    )  # fmt: skip
    assert json.loads(done.stdout) == {"result": "R-1 approved by carol"}, done.stderr

    # An open run of the id: it takes the signal, and no run starts.
    started = await _chronik(
        kafka_bootstrap, topics_ready, "start", "Approval", "--id", "sws-2", "-q", "orders",
        "--arg", '"R-2"',
    )  # fmt: skip
    signalled = await _chronik(
        kafka_bootstrap, topics_ready, "start", "Approval", "--id", "sws-2", "-q", "orders",
        "--arg", '"ignored"', "--signal", "approve", "--signal-arg", '"dan"',
    )  # fmt: skip
    assert json.loads(signalled.stdout) == json.loads(started.stdout), signalled.stderr
    result = await _chronik(kafka_bootstrap, topics_ready, "result", "sws-2")
    assert json.loads(result.stdout) == {"result": "R-2 approved by dan"}
    history = await _chronik(kafka_bootstrap, topics_ready, "history", "sws-2")
    types = [json.loads(line)["type"] for line in history.stdout.splitlines()]
    assert types.count("WorkflowStarted") == 1 and types.count("SignalReceived") == 1

    typo = await _chronik(
        kafka_bootstrap, topics_ready, "start", "Approval", "--id", "sws-3", "-q", "orders",
        "--signal", "aprove",
    )  # fmt: skip
    assert typo.returncode == 2 and "has no signal 'aprove'" in typo.stderr
    lonely = await _chronik(
        kafka_bootstrap, topics_ready, "start", "Approval", "--id", "sws-3", "-q", "orders",
        "--signal-arg", '"x"',
    )  # fmt: skip
    assert lonely.returncode == 2 and "--signal-arg needs --signal" in lonely.stderr


async def test_failures_are_one_line_with_an_exit_code(
    kafka_bootstrap: str, topics_ready: str, cli_worker: ChronikProcess
) -> None:
    failed = await _chronik(
        kafka_bootstrap, topics_ready, "start", "transfer", "--id", "cli-saga", "-q", "orders",
        "--arg", '"alice"', "--arg", '"closed-bob"', "--arg", "5", "--wait",
    )  # fmt: skip
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines() == [
        "Error: workflow failed: activity 'deposit' (seq 2) failed"
    ]
    missing = await _chronik(kafka_bootstrap, topics_ready, "describe", "no-such-workflow")
    assert missing.returncode == 2
    assert "not found" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad = await _chronik(
        kafka_bootstrap, topics_ready, "start", "Approval", "--id", "x", "-q", "q", "--arg", "{"
    )
    assert bad.returncode == 2
    assert "is not JSON" in bad.stderr
    unquoted = await _chronik(
        kafka_bootstrap, topics_ready, "start", "Approval", "--id", "x", "-q", "q", "--arg", "R-1"
    )
    assert unquoted.returncode == 2
    assert (
        "Invalid value for '--arg': 'R-1' is not JSON (Expecting value) (a string is quoted: "
        """--arg '"R-1"')""" in unquoted.stderr
    )


async def test_terminate_cancel_and_an_unknown_type_say_how_the_run_ended(
    kafka_bootstrap: str, topics_ready: str, cli_worker: ChronikProcess
) -> None:
    """A terminated run printed "Error: workflow failed: <reason>", a cancelled one
    "workflow failed: workflow cancelled"; an unknown type blamed the task queue, though
    workflow types are per namespace."""
    runs = {}
    for workflow_id in ("cli-term", "cli-cancel"):
        started = await _chronik(
            kafka_bootstrap, topics_ready, "start", "Approval", "--id", workflow_id,
            "-q", "orders", "--arg", '"R"', "--request-id", f"{workflow_id}-start",
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        runs[workflow_id] = json.loads(started.stdout)
    again = await _chronik(
        kafka_bootstrap, topics_ready, "start", "Approval", "--id", "cli-term",
        "-q", "orders", "--arg", '"R"', "--request-id", "cli-term-start",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr  # the same request: the same run, no refusal
    assert json.loads(again.stdout) == runs["cli-term"]
    terminated = await _chronik(
        kafka_bootstrap, topics_ready, "terminate", "cli-term", "--reason", "ops kill"
    )
    assert terminated.returncode == 0, terminated.stderr
    result = await _chronik(kafka_bootstrap, topics_ready, "result", "cli-term")
    assert (result.returncode, result.stderr) == (1, "Error: workflow terminated: ops kill\n")
    await _chronik(kafka_bootstrap, topics_ready, "cancel", "cli-cancel")
    result = await _chronik(kafka_bootstrap, topics_ready, "result", "cli-cancel")
    assert (result.returncode, result.stderr) == (1, "Error: workflow cancelled\n")
    unknown = await _chronik(
        kafka_bootstrap, topics_ready, "start", "Aproval", "--id", "cli-unknown", "-q", "orders",
        "--wait",
    )  # fmt: skip
    assert unknown.returncode == 1
    assert unknown.stderr.startswith(
        "Error: workflow failed: workflow type 'Aproval' (task queue 'orders') is not "
        "registered with the workflow worker that owns 'cli-unknown' (registered: Approval, "
    )
    timed = await _chronik(
        kafka_bootstrap, topics_ready, "start", "Approval", "--id", "cli-timed", "-q", "orders",
        "--arg", '"R"', "--execution-timeout", "0.5", "--wait",
    )  # fmt: skip
    assert (timed.returncode, timed.stderr) == (
        1,
        "Error: workflow timed out: workflow execution timed out\n",
    )


async def _chronik_top(
    bootstrap: str, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "workers.cli", "--bootstrap-servers", bootstrap, *args]
    return await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    "args",
    [
        ("workflow", "describe", "x"),
        ("worker", "examples.order", "-q", "orders"),
        ("timers",),
        ("history", "tail", "--idle-exit", "1"),
    ],
    ids=["workflow", "worker", "timers", "history"],
)
async def test_a_namespace_without_topics_is_one_line_not_a_process_waiting_forever(
    kafka_bootstrap: str, args: tuple[str, ...]
) -> None:
    done = await _chronik_top(kafka_bootstrap, "--namespace", "nosuchnamespace", *args)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "nosuchnamespace" in done.stderr and "topics create" in done.stderr


@pytest.mark.parametrize("setting", ["foo.bar=1", "partitioner=consistent"])
async def test_a_bad_kafka_setting_is_one_line(
    kafka_bootstrap: str, topics_ready: str, setting: str
) -> None:
    done = await _chronik_top(
        kafka_bootstrap, "--namespace", topics_ready, "-X", setting, "workflow", "describe", "x"
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("Error: ")


async def test_an_argument_of_the_wrong_type_fails_the_workflow_saying_why(
    kafka_bootstrap: str, topics_ready: str, cli_worker: ChronikProcess
) -> None:
    done = await _chronik(
        kafka_bootstrap, topics_ready,
        "start", "transfer", "--id", "cli-bad-arg", "-q", "orders",
        "--arg", '"alice"', "--arg", '"bob"', "--arg", '"ten"', "--wait",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "workflow failed" in done.stderr


def test_a_bad_setting_from_the_environment_names_its_variable(kafka_bootstrap: str) -> None:
    """`-X foo.bar=1` shows on the command line; CHRONIK_RDKAFKA_FOO_BAR=1 does not, so the
    error names the variable (and only when its value is the one in use)."""
    runner = CliRunner()
    args = ["--bootstrap-servers", kafka_bootstrap, "kafka", "check"]
    done = runner.invoke(cli, args, env={"CHRONIK_RDKAFKA_FOO_BAR": "1"})
    assert done.exit_code == 2
    assert done.output.strip() == (
        'Error: a Kafka client setting is not valid: No such configuration property: "foo.bar"'
        " (set by CHRONIK_RDKAFKA_FOO_BAR)"
    )
    overridden = runner.invoke(
        cli, ["-X", "foo.bar=2", *args], env={"CHRONIK_RDKAFKA_FOO_BAR": "1"}
    )
    assert overridden.exit_code == 2 and "CHRONIK_RDKAFKA" not in overridden.output


async def test_a_task_queue_no_activity_worker_polls_is_named_in_the_worker_log(
    kafka_bootstrap: str, topics_ready: str, launch: Launcher, tmp_path: Path
) -> None:
    """A misspelt task queue waited forever and nobody said why."""
    launch.worker(role="workflow", worker_id="lonely", modules=MODULES)
    started = await _chronik(
        kafka_bootstrap, topics_ready,
        "start", "process_order", "--id", "typo-1", "-q", "ordrs", "--arg", '"T-1"',
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    log = tmp_path / "lonely.log"
    deadline = time.monotonic() + 60
    while "no activity worker polls this task queue" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        await asyncio.sleep(0.2)
    line = next(json.loads(x) for x in log.read_text().splitlines() if "no activity worker" in x)
    assert line["task_queue"] == "ordrs"
