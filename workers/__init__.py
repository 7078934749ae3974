"""The processes: workflow worker, activity worker, CLI. `Worker` is the entry point."""

from workers.worker import Worker

__all__ = ["Worker"]
