"""Changing a topic's configuration on the broker, as an operator would, for the tests."""

from __future__ import annotations

from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import AlterConfigOpType, ConfigEntry, ConfigResource
from confluent_kafka.admin._resource import ResourceType


def admin(config: dict[str, str]) -> AdminClient:
    settings: dict[str, str | int | float | bool] = {**config}
    return AdminClient(settings)


def set_topic_config(config: dict[str, str], topic: str, **settings: str) -> None:
    """Change ``topic``'s configuration (names with ``_`` for ``.``) on the broker."""
    entries = [
        ConfigEntry(name.replace("_", "."), value, incremental_operation=AlterConfigOpType.SET)
        for name, value in settings.items()
    ]
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=entries)
    client = admin(config)  # kept until the futures resolve
    for future in client.incremental_alter_configs([resource]).values():
        future.result()
