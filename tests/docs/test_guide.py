"""docs/guide.md runs: its Python blocks, in order, as one module; each ``test_*`` in it runs.

A guide whose examples are not run drifts from the API it describes. Executing the blocks
as one module lets the guide build on earlier blocks the way a reader does.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import sys
import types
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guide.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _guide_module() -> types.ModuleType:
    """The guide's blocks executed in one module, registered so that type hints resolve."""
    module = types.ModuleType("chronik_guide")
    module.__file__ = str(GUIDE)
    sys.modules[module.__name__] = module
    text = GUIDE.read_text()
    for match in _BLOCK.finditer(text):
        line = text.count("\n", 0, match.start(1)) + 1
        code = compile("\n" * (line - 1) + match.group(1), str(GUIDE), "exec")
        exec(code, module.__dict__)
    return module


def _guide_tests() -> Iterator[tuple[str, Callable[[], Coroutine[Any, Any, None]]]]:
    for name, value in vars(_guide_module()).items():
        if name.startswith("test_") and inspect.iscoroutinefunction(value):
            yield name, value


GUIDE_TESTS = dict(_guide_tests())


def test_the_guide_has_examples_to_run() -> None:
    assert len(GUIDE_TESTS) >= 8


@pytest.mark.parametrize("name", list(GUIDE_TESTS))  # in the guide's order
def test_guide_example(name: str) -> None:
    asyncio.run(GUIDE_TESTS[name]())
