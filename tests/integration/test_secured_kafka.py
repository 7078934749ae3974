"""SASL/SSL settings reach every Kafka client Chronik makes.

A broker of this test's own takes nothing but SASL_SSL (PLAIN over TLS, with a self-signed
certificate made by Java's keytool), so a client, producer, consumer or admin client that
dropped the settings would fail. Topics are created by the CLI given ``-X`` settings, a
worker process reads them from ``CHRONIK_RDKAFKA_*`` variables, and the client gets them as
`Client.connect` keyword arguments; a workflow then runs through all of them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from examples import order
from runtime.client import Client
from tests.conftest import free_ports
from tests.integration.processes import ChronikProcess
from workers import local_kafka

pytestmark = pytest.mark.kafka

STORE_PASSWORD = "store-secret"
USER, PASSWORD = "alice", "alice-secret"
JAAS = (
    "org.apache.kafka.common.security.plain.PlainLoginModule required "
    'username="broker" password="broker-secret" '
    f'user_broker="broker-secret" user_{USER}="{PASSWORD}";'
)


def _keytool(*args: str) -> None:
    keytool = shutil.which("keytool")
    assert keytool is not None, "keytool comes with the JDK the broker needs"
    subprocess.run([keytool, *args], check=True, capture_output=True, timeout=60)


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """The broker's key store, a trust store holding its certificate, the same as PEM."""
    keys, trust, pem = directory / "broker.p12", directory / "trust.p12", directory / "ca.pem"
    store = ("-storetype", "PKCS12", "-storepass", STORE_PASSWORD)
    _keytool("-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048",
             "-validity", "2", "-dname", "CN=127.0.0.1", "-ext", "SAN=ip:127.0.0.1",
             "-keystore", str(keys), *store)  # fmt: skip
    _keytool("-exportcert", "-alias", "broker", "-keystore", str(keys),
             "-storepass", STORE_PASSWORD, "-rfc", "-file", str(pem))  # fmt: skip
    _keytool("-importcert", "-noprompt", "-alias", "broker", "-file", str(pem),
             "-keystore", str(trust), *store)  # fmt: skip
    return keys, trust, pem


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """A broker whose only client listener is SASL_SSL: its address and a client's settings."""
    directory = tmp_path_factory.mktemp("secured-kafka")
    keys, trust, pem = _certificates(directory)
    port, controller = free_ports(2)
    plain = local_kafka.BrokerConfig(port=port, controller_port=controller, data_dir=directory)
    settings = {
        **local_kafka.single_node_settings(plain),
        "listeners": f"SECURE://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
        "advertised.listeners": f"SECURE://127.0.0.1:{port}",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,SECURE:SASL_SSL",
        "inter.broker.listener.name": "SECURE",
        "sasl.enabled.mechanisms": "PLAIN",
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
        "listener.name.secure.plain.sasl.jaas.config": JAAS,
        "ssl.keystore.location": str(keys),
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.password": STORE_PASSWORD,
        "ssl.key.password": STORE_PASSWORD,
        "ssl.truststore.location": str(trust),
        "ssl.truststore.type": "PKCS12",
        "ssl.truststore.password": STORE_PASSWORD,
    }
    client = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.username": USER,
        "sasl.password": PASSWORD,
        "ssl.ca.location": str(pem),
    }
    config = local_kafka.BrokerConfig(
        port=port, controller_port=controller, data_dir=directory,
        settings=tuple(settings.items()), client_settings=tuple(client.items()),
    )  # fmt: skip
    local_kafka.start(config)
    try:
        yield config.bootstrap, client
    finally:
        local_kafka.stop(config)


def _chronik(bootstrap: str, *args: str, settings: dict[str, str] | None = None) -> str:
    """``chronik`` with ``-X`` for each setting; its stderr when it fails, else stdout."""
    flags = [arg for key, value in (settings or {}).items() for arg in ("-X", f"{key}={value}")]
    result = subprocess.run(
        [sys.executable, "-m", "workers.cli", "--bootstrap-servers", bootstrap,
         "--namespace", "secured", *flags, *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout if result.returncode == 0 else f"rc={result.returncode} {result.stderr}"


async def test_a_workflow_runs_through_cli_worker_and_client_on_sasl_ssl(
    secured: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    bootstrap, settings = secured
    assert "rc=" not in _chronik(bootstrap, "topics", "create", "--partitions", "2",
                                 settings=settings)  # fmt: skip
    variables = {
        "CHRONIK_RDKAFKA_" + key.upper().replace(".", "_"): value for key, value in settings.items()
    }
    worker = ChronikProcess(
        bootstrap, "secured",
        ("worker", "examples.order", "--task-queue", "orders", "--role", "all",
         "--worker-id", "secured-1", "--state-dir", str(tmp_path / "state")),
        tmp_path / "worker.log", variables,
    ).start()  # fmt: skip
    try:
        client = await Client.connect(bootstrap, namespace="secured", **dict[str, Any](settings))
        try:
            receipts = await client.execute_workflow(
                order.process_order, "S-1", id="secured-order", task_queue="orders"
            )
        finally:
            await client.close()
        assert receipts == ["payment-S-1", "reservation-S-1", "shipment-S-1", "confirmation-S-1"]
        assert '"completed"' in _chronik(bootstrap, "workflow", "describe", "secured-order",
                                         settings=settings)  # fmt: skip
    finally:
        worker.stop()


def test_missing_or_wrong_credentials_fail_in_one_line_naming_the_cause(
    secured: tuple[str, dict[str, str]],
) -> None:
    bootstrap, settings = secured
    without = _chronik(bootstrap, "kafka", "check")
    assert without.startswith("rc=2 Error: Kafka is not reachable")
    assert "does that listener speak PLAINTEXT?" in without
    wrong = _chronik(bootstrap, "kafka", "check", settings={**settings, "sasl.password": "x"})
    assert wrong.startswith("rc=2 Error: Kafka is not reachable")
    assert "sasl.username and sasl.password" in wrong
