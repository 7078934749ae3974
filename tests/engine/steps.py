"""Activities that return their letter: the steps the replay and versioning tests move,
swap and patch between versions of a workflow."""

from __future__ import annotations

from datetime import timedelta

from runtime import activity

T = timedelta(seconds=5)


@activity.defn
async def step_a() -> str:
    return "a"


@activity.defn
async def step_b() -> str:
    return "b"


@activity.defn
async def step_c() -> str:
    return "c"


@activity.defn
async def step_d() -> str:
    return "d"


STEPS = [step_a, step_b, step_c, step_d]
