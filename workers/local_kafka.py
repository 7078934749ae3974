"""A real single-node Apache Kafka broker, provisioned by the project itself.

Machines without a Docker engine (our development machines and CI) still need a real broker:
Chronik relies on transactions, compaction and consumer-group semantics that no fake
reproduces. This module resolves the broker's jars from Maven Central with ``mvn`` into a
cache directory, formats KRaft storage with ``kafka.tools.StorageTool`` and runs
``kafka.Kafka`` in combined broker+controller mode on 127.0.0.1.

Every step is idempotent: jars already in the cache are not resolved again, formatted storage
is not formatted again, and a live broker (pid file + process + metadata answer) is reused.
The broker runs detached in its own process group; its PID is in ``<data dir>/kafka.pid`` and
`stop` signals exactly that PID, never a process found by name.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from topics.reachability import QUIET

KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
# Kafka 4.1 logs through SLF4J 1.7: the binding is log4j-slf4j-impl, not log4j-slf4j2-impl.
LOG4J_VERSION = "2.24.3"
DEPENDENCY_PLUGIN_VERSION = "3.8.1"
DEFAULT_PORT = 9092
START_TIMEOUT_S = 60.0
STOP_GRACE_S = 30.0

# Brokers this process started: kept so that `stop` can reap them (no zombie, no warning).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class LocalKafkaError(RuntimeError):
    """Provisioning, starting or stopping the local broker failed; the message says why."""


def default_home() -> Path:
    """The jar cache: ``CHRONIK_KAFKA_HOME`` or ``~/.cache/chronik/kafka-<version>``."""
    configured = os.environ.get("CHRONIK_KAFKA_HOME")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "chronik" / f"kafka-{KAFKA_VERSION}"


@dataclass(frozen=True)
class BrokerConfig:
    """Where one local broker lives and listens.

    ``data_dir`` holds server.properties, the KRaft logs, the broker's own log files and the
    pid file; it defaults to ``CHRONIK_KAFKA_DATA`` or ``<home>/broker-<port>`` so that two
    brokers on different ports never share state.
    """

    port: int = DEFAULT_PORT
    controller_port: int | None = None
    home: Path = field(default_factory=default_home)
    data_dir: Path | None = None
    #: How often the log cleaner looks for compacted partitions to clean. One second makes
    #: compaction observable within a test; each look walks every compacted partition
    #: (7 % of a loaded broker's CPU here), so a benchmark uses Kafka's default, 15 s.
    cleaner_backoff_ms: int = 1000
    #: The broker's settings in full, in place of the generated single-node ones (which
    #: `port`, `controller_port` and the data dir then no longer shape: these must listen
    #: on them). The compose file's broker is run this way in its test, on machines with
    #: no Docker engine.
    settings: tuple[tuple[str, str], ...] | None = None
    #: The librdkafka settings a client needs to reach a broker whose `settings` secure its
    #: listener (SASL, SSL): what this module's own readiness checks connect with.
    client_settings: tuple[tuple[str, str], ...] = ()

    @property
    def ctrl_port(self) -> int:
        return self.controller_port if self.controller_port is not None else self.port + 1

    @property
    def data(self) -> Path:
        if self.data_dir is not None:
            return self.data_dir
        configured = os.environ.get("CHRONIK_KAFKA_DATA")
        return Path(configured).expanduser() if configured else self.home / f"broker-{self.port}"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def libs(self) -> Path:
        return self.home / "libs"

    @property
    def properties(self) -> Path:
        return self.data / "server.properties"

    @property
    def log4j_config(self) -> Path:
        return self.data / "log4j2.properties"

    @property
    def pid_file(self) -> Path:
        return self.data / "kafka.pid"

    @property
    def log_dir(self) -> Path:
        return self.data / "logs"

    @property
    def server_log(self) -> Path:
        return self.log_dir / "server.log"

    @property
    def console_log(self) -> Path:
        return self.log_dir / "kafka.out"


@dataclass(frozen=True)
class BrokerStatus:
    """What `status` and `start` report: the address, the process and where its logs are."""

    running: bool
    bootstrap: str
    pid: int | None
    log: Path
    reused: bool = False
    provision_s: float = 0.0
    start_s: float = 0.0


# --------------------------------------------------------------------------- jars


def _pom() -> str:
    deps = [
        ("org.apache.kafka", f"kafka_{SCALA_VERSION}", KAFKA_VERSION),
        ("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION),
        ("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
    ]
    dependencies = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in deps
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by chronik (workers/local_kafka.py): the jars of a Kafka broker. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.chronik</groupId>
  <artifactId>local-kafka</artifactId>
  <version>{KAFKA_VERSION}</version>
  <packaging>pom</packaging>
  <dependencies>
{dependencies}
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>{DEPENDENCY_PLUGIN_VERSION}</version>
      </plugin>
    </plugins>
  </build>
</project>
"""


def _jars_present(libs: Path) -> bool:
    return (libs / ".complete").exists() and any(libs.glob(f"kafka_{SCALA_VERSION}-*.jar"))


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    """Serialise provisioning of one cache dir across processes (parallel test sessions)."""
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_jars(home: Path) -> bool:
    """Resolve the broker's jars into ``<home>/libs`` unless present; True if it resolved.

    The jars land in a scratch directory first and are renamed into place with a completion
    marker, so an interrupted download is never mistaken for a usable cache.
    """
    libs = home / "libs"
    if _jars_present(libs):
        return False
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalKafkaError(
            "mvn not found: install Maven 3.8+ to provision Kafka, or point "
            "CHRONIK_BOOTSTRAP_SERVERS at an existing cluster"
        )
    with _locked(home):
        if _jars_present(libs):
            return False
        (home / "pom.xml").write_text(_pom())
        scratch = home / "libs.partial"
        shutil.rmtree(scratch, ignore_errors=True)
        command = [
            mvn, "-q", "-B", "-f", str(home / "pom.xml"), "dependency:copy-dependencies",
            f"-DoutputDirectory={scratch}", "-DincludeScope=runtime",
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
            raise LocalKafkaError(f"mvn could not resolve the Kafka jars:\n{tail}")
        shutil.rmtree(libs, ignore_errors=True)
        scratch.rename(libs)
        (libs / ".complete").write_text(KAFKA_VERSION + "\n")
    return True


# --------------------------------------------------------------------------- configuration


def server_properties(config: BrokerConfig) -> str:
    """The broker configuration: `config.settings`, or `single_node_settings`."""
    if config.settings is not None:
        return _properties_text(dict(config.settings))
    return _properties_text(single_node_settings(config))


def single_node_settings(config: BrokerConfig) -> dict[str, str]:
    """One KRaft node, every internal topic at replication 1, a PLAINTEXT listener."""
    return {
        "node.id": "1",
        "process.roles": "broker,controller",
        "controller.quorum.voters": f"1@127.0.0.1:{config.ctrl_port}",
        "controller.listener.names": "CONTROLLER",
        "listeners": f"PLAINTEXT://127.0.0.1:{config.port},CONTROLLER://127.0.0.1:{config.ctrl_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{config.port}",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(config.data / "kraft-logs"),
        "num.partitions": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "10",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "log.cleaner.backoff.ms": str(config.cleaner_backoff_ms),
        "auto.create.topics.enable": "false",
    }


def _properties_text(settings: dict[str, str]) -> str:
    lines = ["# Generated by chronik (workers/local_kafka.py); rewritten on every start."]
    lines += [f"{key}={value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def log4j_properties(config: BrokerConfig) -> str:
    """Broker logs go to a file in the data dir; the terminal stays quiet."""
    return "\n".join(
        [
            "# Generated by chronik (workers/local_kafka.py).",
            "status = warn",
            "appender.file.type = File",
            "appender.file.name = FILE",
            f"appender.file.fileName = {config.server_log}",
            "appender.file.layout.type = PatternLayout",
            "appender.file.layout.pattern = [%d] %p %m (%c)%n",
            "rootLogger.level = info",
            "rootLogger.appenderRef.file.ref = FILE",
            "logger.request.name = kafka.request.logger",
            "logger.request.level = warn",
            "logger.state.name = state.change.logger",
            "logger.state.level = warn",
            "",
        ]
    )


def _cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (22 chars)."""
    while True:
        encoded = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not encoded.startswith("-"):  # Kafka refuses ids that look like a CLI flag
            return encoded


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise LocalKafkaError("java not found: Kafka 4.1 needs Java 17 or newer on PATH")
    return java


def _format_storage(config: BrokerConfig) -> None:
    """Format KRaft storage once; with static quorum voters there is no ``--standalone``."""
    if (config.data / "kraft-logs" / "meta.properties").exists():
        return
    command = [
        _java(), "-cp", f"{config.libs}/*", f"-Dlog4j2.configurationFile={config.log4j_config}",
        "kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(config.properties),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LocalKafkaError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")


# --------------------------------------------------------------------------- process


def _read_pid(config: BrokerConfig) -> int | None:
    try:
        return int(config.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _is_our_broker(pid: int, config: BrokerConfig) -> bool:
    """True when ``pid`` is alive and is the broker of this data dir (not a reused PID)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"kafka.Kafka" in cmdline and str(config.properties).encode() in cmdline


def answers(
    bootstrap: str, timeout: float = 2.0, settings: tuple[tuple[str, str], ...] = ()
) -> bool:
    """True when a broker at ``bootstrap`` answers a metadata request within ``timeout``
    (connecting with the librdkafka ``settings`` its listener needs)."""
    admin = AdminClient({**QUIET, **dict(settings), "bootstrap.servers": bootstrap})
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException:
        return False
    return True


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _log_tail(config: BrokerConfig, lines: int = 25) -> str:
    chunks = []
    for path in (config.console_log, config.server_log):
        with contextlib.suppress(OSError):
            chunks += path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(chunks[-lines:])


def status(config: BrokerConfig) -> BrokerStatus:
    """Is the broker of ``config`` running and answering, and where are its logs."""
    pid = _read_pid(config)
    alive = pid is not None and _is_our_broker(pid, config)
    running = alive and answers(config.bootstrap, settings=config.client_settings)
    return BrokerStatus(
        running=running, bootstrap=config.bootstrap, pid=pid if alive else None,
        log=config.server_log,
    )  # fmt: skip


def _wait_ready(config: BrokerConfig, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _CHILDREN.pop(process.pid, None)
            config.pid_file.unlink(missing_ok=True)
            raise LocalKafkaError(
                f"the Kafka broker exited with code {process.returncode} while starting; "
                f"logs in {config.log_dir}:\n{_log_tail(config)}"
            )
        if answers(config.bootstrap, timeout=1.0, settings=config.client_settings):
            return
        time.sleep(0.2)
    stop(config)
    raise LocalKafkaError(
        f"the Kafka broker did not answer on {config.bootstrap} within {timeout:.0f}s; "
        f"logs in {config.log_dir}:\n{_log_tail(config)}"
    )


def start(config: BrokerConfig, timeout: float = START_TIMEOUT_S) -> BrokerStatus:
    """Provision (if needed) and start the broker, or reuse the live one; wait until it answers."""
    current = status(config)
    if current.running:
        return BrokerStatus(**{**current.__dict__, "reused": True})
    if current.pid is not None:  # alive but not answering: a broker still starting up
        stop(config)
    if _port_in_use(config.port) or _port_in_use(config.ctrl_port):
        raise LocalKafkaError(
            f"port {config.port} or {config.ctrl_port} on 127.0.0.1 is taken by another "
            "process; choose another with --port, or use that broker via "
            "--bootstrap-servers"
        )
    began = time.monotonic()
    ensure_jars(config.home)
    provisioned = time.monotonic()
    config.log_dir.mkdir(parents=True, exist_ok=True)
    config.properties.write_text(server_properties(config))
    config.log4j_config.write_text(log4j_properties(config))
    _format_storage(config)
    command = [
        _java(), "-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={config.log4j_config}", f"-Dkafka.logs.dir={config.log_dir}",
        "-cp", f"{config.libs}/*", "kafka.Kafka", str(config.properties),
    ]  # fmt: skip
    with config.console_log.open("ab") as console:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
            cwd=config.data, start_new_session=True,
        )  # fmt: skip
    _CHILDREN[process.pid] = process
    config.pid_file.write_text(f"{process.pid}\n")
    _wait_ready(config, process, timeout)
    ready = time.monotonic()
    return BrokerStatus(
        running=True, bootstrap=config.bootstrap, pid=process.pid, log=config.server_log,
        provision_s=provisioned - began, start_s=ready - provisioned,
    )  # fmt: skip


def _gone(pid: int, config: BrokerConfig) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is not None
    return not _is_our_broker(pid, config)


def _wait_gone(pid: int, config: BrokerConfig, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid, config):
            return True
        time.sleep(0.2)
    return _gone(pid, config)


def stop(config: BrokerConfig, grace: float = STOP_GRACE_S) -> int | None:
    """Stop the broker of ``config`` by its PID: SIGTERM, then SIGKILL after ``grace``.

    Returns the PID that was stopped, or None when no broker of this data dir was running.
    """
    pid = _read_pid(config)
    if pid is None or _gone(pid, config):
        config.pid_file.unlink(missing_ok=True)
        _CHILDREN.pop(pid or -1, None)
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, config, grace):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, config, 10.0)
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        child.wait(timeout=10.0)
    config.pid_file.unlink(missing_ok=True)
    return pid
