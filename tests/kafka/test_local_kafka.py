"""The self-provisioned broker is a real Kafka: metadata, transactions, idempotent `up`, `down`.

Also the CLI's promise for a wrong bootstrap address: one readable line, exit code 2, fast.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from tests.conftest import free_ports
from workers import local_kafka
from workers.cli import cli


def _create_topic(config: dict[str, str], name: str) -> None:
    admin = AdminClient(dict(config))
    for future in admin.create_topics([NewTopic(name, num_partitions=1)]).values():
        future.result(timeout=30)


def _read_all(
    config: dict[str, str], topic: str, expect: int, timeout: float = 30.0
) -> list[bytes]:
    consumer = Consumer(
        {
            **config,
            "group.id": f"{topic}-reader",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(values) < expect and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            value = message.value()
            assert isinstance(value, bytes)
            values.append(value)
        # Anything more (an aborted record leaking through) would show up within a moment.
        extra = consumer.poll(1.0)
        if extra is not None and extra.error() is None:
            value = extra.value()
            assert isinstance(value, bytes)
            values.append(value)
    finally:
        consumer.close()
    return values


def test_broker_answers_metadata(kafka_config: dict[str, str]) -> None:
    metadata = AdminClient(dict(kafka_config)).list_topics(timeout=10)
    assert len(metadata.brokers) == 1
    assert metadata.cluster_id


def test_transactional_round_trip(kafka_config: dict[str, str], namespace: str) -> None:
    topic = f"{namespace}.roundtrip"
    _create_topic(kafka_config, topic)
    producer = Producer({**kafka_config, "transactional.id": f"{namespace}-tx"})
    producer.init_transactions(30)
    producer.begin_transaction()
    for index in range(3):
        producer.produce(topic, key=b"wf-1", value=f"committed-{index}".encode())
    producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"wf-1", value=b"aborted")
    producer.flush(10)
    producer.abort_transaction(30)

    assert _read_all(kafka_config, topic, expect=3) == [
        b"committed-0",
        b"committed-1",
        b"committed-2",
    ]


def test_up_reuses_the_running_broker(
    local_broker: local_kafka.BrokerConfig | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if local_broker is None:
        pytest.skip("the suite uses an existing broker (CHRONIK_BOOTSTRAP_SERVERS)")
    again = local_kafka.start(local_broker)
    assert again.reused
    assert again.pid == local_kafka.status(local_broker).pid

    monkeypatch.setenv("CHRONIK_KAFKA_DATA", str(local_broker.data))
    result = CliRunner().invoke(
        cli, ["kafka", "up", "--mode", "local", "--port", str(local_broker.port)]
    )
    assert result.exit_code == 0, result.output
    assert f"already running at {local_broker.bootstrap} (pid {again.pid}); reused" in result.output


def test_down_stops_by_pid_and_up_restarts_with_the_data(tmp_path: Path) -> None:
    port, controller_port = free_ports(2)
    config = local_kafka.BrokerConfig(port=port, controller_port=controller_port, data_dir=tmp_path)
    started = local_kafka.start(config)
    try:
        _create_topic({"bootstrap.servers": config.bootstrap}, "kept")
        assert local_kafka.stop(config) == started.pid
        assert not local_kafka.status(config).running
        assert not config.pid_file.exists()

        warm = local_kafka.start(config)
        assert not warm.reused
        assert warm.pid != started.pid
        topics = AdminClient({"bootstrap.servers": config.bootstrap}).list_topics(timeout=10)
        assert "kept" in topics.topics
    finally:
        local_kafka.stop(config)
    assert local_kafka.stop(config) is None


@pytest.mark.parametrize("bootstrap", ["127.0.0.1:{closed}", "no-such-host.invalid:9092"])
def test_cli_with_a_wrong_bootstrap_fails_fast_and_readably(bootstrap: str) -> None:
    (closed,) = free_ports(1)
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "workers.cli", "--bootstrap-servers",
         bootstrap.format(closed=closed), "kafka", "check"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert time.monotonic() - began < 15
    assert result.returncode == 2
    assert result.stderr.startswith("Error: Kafka is not reachable at ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_the_cleaner_back_off_is_one_second_unless_a_benchmark_asks_for_kafkas_default(
    tmp_path: Path,
) -> None:
    tests_broker = local_kafka.BrokerConfig(port=19092, data_dir=tmp_path)
    bench_broker = local_kafka.BrokerConfig(
        port=19092, data_dir=tmp_path, cleaner_backoff_ms=15_000
    )

    assert "log.cleaner.backoff.ms=1000\n" in local_kafka.server_properties(tests_broker)
    assert "log.cleaner.backoff.ms=15000\n" in local_kafka.server_properties(bench_broker)


def _kafka_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args, "kafka", "check"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


# librdkafka names only the symptom ("Broker transport failure", "Required feature not
# supported by broker"); the one line of the error also says the likely cause.


def test_a_security_protocol_the_listener_does_not_speak_is_named(kafka_bootstrap: str) -> None:
    result = _kafka_check("--bootstrap-servers", kafka_bootstrap, "-X", "security.protocol=SSL")
    assert result.returncode == 2
    assert "does that listener speak SSL?" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_listener_that_never_answers_is_named_as_such() -> None:
    """A broker stopped (``kill -STOP``), overloaded or still starting takes the connection
    and answers nothing; librdkafka calls that a transport failure too, and the hint named
    only a security protocol. A socket that listens and never reads is one."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        result = _kafka_check("--bootstrap-servers", f"127.0.0.1:{port}")
    assert result.returncode == 2
    assert "the listener took the connection and answered nothing in 5 s" in result.stderr
    assert "or the broker is paused, overloaded or still starting)" in result.stderr


def test_a_kraft_controller_port_is_named(local_broker: local_kafka.BrokerConfig | None) -> None:
    if local_broker is None:
        pytest.skip("the controller port is known only for the suite's own broker (CI's)")
    result = _kafka_check("--bootstrap-servers", f"127.0.0.1:{local_broker.ctrl_port}")
    assert result.returncode == 2
    assert "a KRaft controller port?" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
