"""The end-to-end demo: real Kafka, a real worker, the seed's two workflows.

``bash scripts/demo.sh`` starts the broker and runs this. It creates the topics of a fresh
namespace, runs a worker in this process, executes the order workflow and the transfer saga
(whose deposit fails and is compensated), and prints each workflow's history as read back
from the history topic.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import uuid
from collections.abc import Sequence

from examples import order, transfer
from runtime.client import Client
from runtime.errors import WorkflowFailureError
from runtime.events import HistoryEvent
from runtime.history_json import event_to_dict
from runtime.logging import configure_logging
from topics.admin import TopicAdmin
from topics.catalogue import Catalogue
from workers.worker import Worker

_SHOWN = ("workflow_type", "activity_type", "seq", "attempt", "result", "failure")


def _print_history(title: str, history: Sequence[HistoryEvent]) -> None:
    print(f"\n{title}")
    for event in history:
        rendered = event_to_dict(event)
        attributes = rendered["attributes"]
        shown = []
        for name in _SHOWN:
            value = attributes.get(name)
            if value is None:
                continue
            if name == "failure":
                value = f"{value['type'] or value['kind']}: {value['message']}"
            elif name == "result":
                value = value.get("data", value)
            shown.append(f"{name}={value}")
        print(f"  #{rendered['event_id']:<3} {rendered['type']:<20} {' '.join(shown)}")


async def main() -> int:
    bootstrap = os.environ.get("CHRONIK_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    namespace = f"demo{uuid.uuid4().hex[:6]}"
    TopicAdmin({"bootstrap.servers": bootstrap}).create(Catalogue(namespace, 3))
    print(f"Kafka at {bootstrap}, namespace {namespace!r}: topics created")
    os.environ.setdefault("CHRONIK_STATE_DIR", tempfile.mkdtemp(prefix="chronik-demo-"))
    client = await Client.connect(bootstrap, namespace=namespace)
    worker = Worker(
        client,
        task_queue="demo",
        workflows=[*order.WORKFLOWS, *transfer.WORKFLOWS],
        activities=[*order.ACTIVITIES, *transfer.ACTIVITIES],
    )
    try:
        async with worker:
            receipts = await client.execute_workflow(
                order.process_order, "A-1001", id="order-A-1001", task_queue="demo"
            )
            print(f"\nprocess_order('A-1001') -> {receipts}")
            handle = await client.start_workflow(
                transfer.transfer, "alice", "closed-bob", 100, id="transfer-1", task_queue="demo"
            )
            try:
                await handle.result()
            except WorkflowFailureError as failure:
                print(f"transfer(alice -> closed-bob) failed as it should: {failure.cause}")
            _print_history(
                "history of order-A-1001 (from Kafka):",
                await client.get_workflow_handle("order-A-1001").fetch_history(),
            )
            _print_history("history of transfer-1 (the saga):", await handle.fetch_history())
    finally:
        await client.close()
    print("\ndemo complete")
    return 0


if __name__ == "__main__":
    configure_logging(level=os.environ.get("CHRONIK_LOG_LEVEL", "WARNING"))
    sys.exit(asyncio.run(main()))
