"""Fail fast, and readably, when Kafka is not where the user said it is.

librdkafka never gives up on a bootstrap address: a client pointed at a wrong host retries
forever and logs every attempt. Every command that needs Kafka therefore calls
`ensure_reachable` first, which turns "nothing there" into one typed error within a few
seconds. The CLI renders that error as a single line and exit code 2.

The check has two steps: a plain TCP connect to each bootstrap address (answers "connection
refused" or "unknown host" in milliseconds), then a metadata request through librdkafka with
the caller's full client configuration, so that SASL/SSL settings are exercised too.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from topics.errors import KafkaConfigError, KafkaUnavailableError

DEFAULT_TIMEOUT_S = 5.0

# librdkafka settings come from the environment as CHRONIK_RDKAFKA_<NAME>, with the dots of
# the property name written as underscores: CHRONIK_RDKAFKA_SECURITY_PROTOCOL=SASL_SSL.
ENV_CONFIG_PREFIX = "CHRONIK_RDKAFKA_"


class KafkaUnreachableError(KafkaUnavailableError):
    """No Kafka broker answered at the given bootstrap address within the timeout."""

    def __init__(self, bootstrap: str, reason: str) -> None:
        super().__init__(f"Kafka is not reachable at {bootstrap}: {reason}")
        self.bootstrap = bootstrap
        self.reason = reason


def client_config_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """librdkafka properties given as ``CHRONIK_RDKAFKA_*`` variables (SASL, SSL, ...)."""
    env = os.environ if environ is None else environ
    return {
        key[len(ENV_CONFIG_PREFIX) :].lower().replace("_", "."): value
        for key, value in env.items()
        if key.startswith(ENV_CONFIG_PREFIX)
    }


def _env_origin(detail: str, settings: Mapping[str, object]) -> str:
    """`` (set by CHRONIK_RDKAFKA_FOO_BAR)`` when the property librdkafka names in
    ``detail`` has the value of that variable: nothing on the command line shows it."""
    for name in re.findall(r'"([a-z0-9_.]+)"', detail):
        variable = ENV_CONFIG_PREFIX + name.upper().replace(".", "_")
        if variable in os.environ and settings.get(name) == os.environ[variable]:
            return f" (set by {variable})"
    return ""


_AUTHENTICATION_ERRORS = (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED)

QUIET: dict[str, str | int | float | bool] = {"log_level": 0}
"""Client settings that silence librdkafka's own log lines (its retries while probing)."""


def _parse_addresses(bootstrap: str) -> list[tuple[str, int]]:
    addresses = []
    for raw in bootstrap.split(","):
        entry = raw.strip()
        if "://" in entry:
            entry = entry.split("://", 1)[1]
        if not entry:
            continue
        host, sep, port = entry.rpartition(":")
        if not sep:
            host, port = entry, "9092"
        host = host.strip("[]")
        if not port.isdigit() or not host:
            raise KafkaUnreachableError(bootstrap, f"{raw.strip()!r} is not host:port")
        addresses.append((host, int(port)))
    if not addresses:
        raise KafkaUnreachableError(bootstrap, "no bootstrap address given")
    return addresses


def _tcp_probe(addresses: list[tuple[str, int]], timeout: float) -> str | None:
    """None when one address accepts a TCP connection, else the last failure, readable."""
    failure = "no address answered"
    for host, port in addresses:
        where = f" ({host}:{port})" if len(addresses) > 1 else ""
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return None
        except socket.gaierror:
            failure = f"unknown host {host!r}"
        except TimeoutError:
            failure = f"connection timed out{where}"
        except OSError as exc:
            failure = f"{(exc.strerror or str(exc)).lower()}{where}"
    return failure


def ensure_reachable(
    bootstrap: str,
    timeout: float = DEFAULT_TIMEOUT_S,
    config: Mapping[str, str] | None = None,
) -> None:
    """Return when a broker answers a metadata request, else raise `KafkaUnreachableError`.

    ``config`` is extra librdkafka configuration (security settings); it defaults to the
    ``CHRONIK_RDKAFKA_*`` environment variables.
    """
    deadline = time.monotonic() + timeout
    failure = _tcp_probe(_parse_addresses(bootstrap), timeout)
    if failure is not None:
        raise KafkaUnreachableError(bootstrap, failure)
    settings: dict[str, str | int | float | bool] = {**QUIET, "bootstrap.servers": bootstrap}
    settings.update(client_config_from_env() if config is None else config)
    # librdkafka reports a refused login, or a handshake the listener broke off, to the
    # error callback only; the metadata request itself then fails as a mere "Broker
    # transport failure".
    reported: list[KafkaError] = []
    try:
        probe: dict[str, Any] = {**settings, "error_cb": reported.append}
        admin = AdminClient(probe)
    except (KafkaException, ValueError, TypeError) as exc:  # librdkafka refuses a setting
        detail = exc.args[0].str() if isinstance(exc, KafkaException) else str(exc)
        raise KafkaConfigError(
            f"a Kafka client setting is not valid: {detail}{_env_origin(detail, settings)}"
        ) from None
    try:
        admin.list_topics(timeout=max(0.5, deadline - time.monotonic()))
    except KafkaException as exc:
        admin.poll(0)  # serves the error callback
        refused = [e for e in reported if e.code() in _AUTHENTICATION_ERRORS]
        error = refused[0] if refused else exc.args[0]
        detail = error.str() if hasattr(error, "str") else str(error)
        code = error.code() if isinstance(error, KafkaError) else None
        broken_off = any(e.code() == KafkaError._TRANSPORT for e in reported)
        hint = _hint(code, settings, broken_off=broken_off, waited_s=timeout)
        raise KafkaUnreachableError(bootstrap, f"no metadata answer: {detail}{hint}") from None


def _hint(
    code: int | None, settings: Mapping[str, object], *, broken_off: bool, waited_s: float
) -> str:
    """What usually causes the failures librdkafka names only by their symptom.

    A TCP connect succeeded, so something listens there; these say what it likely is. A
    transport failure with nothing reported on the way is a listener that took the
    connection and never answered: one of another protocol (a TLS listener waits for a
    handshake a plaintext client never sends), or a broker that is paused, overloaded or
    still starting. Named only as the first, it sent the operator of a stalled broker
    after a setting.
    """
    protocol = str(settings.get("security.protocol", "plaintext")).upper()
    if code == KafkaError._UNSUPPORTED_FEATURE:
        return " (something answers there, but not a broker's listener: a KRaft controller port?)"
    if code == KafkaError._TRANSPORT and not broken_off:
        return (
            f" (the listener took the connection and answered nothing in {waited_s:g} s: "
            f"does that listener speak {protocol}? set security.protocol to its protocol, "
            "with -X or CHRONIK_RDKAFKA_SECURITY_PROTOCOL; or the broker is paused, "
            "overloaded or still starting)"
        )
    if code == KafkaError._TRANSPORT:
        return (
            f" (the connection closed in the handshake: does that listener speak {protocol}? "
            "set security.protocol to its protocol, with -X or CHRONIK_RDKAFKA_SECURITY_PROTOCOL)"
        )
    if code in _AUTHENTICATION_ERRORS:
        return " (check sasl.mechanism, sasl.username and sasl.password, or the SSL key store)"
    return ""
