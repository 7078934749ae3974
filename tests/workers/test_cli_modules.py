"""``chronik worker MODULE`` imports the user's module from the current directory."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from workers.cli_worker import load_definitions

APP = """
from runtime import workflow


@workflow.defn
async def hello() -> str:
    return "hello"


WORKFLOWS = [hello]
"""


def test_a_module_in_the_current_directory_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_chronik_app.py").write_text(APP)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "my_chronik_app", raising=False)

    workflows, activities = load_definitions(("my_chronik_app",))

    assert [w.__name__ for w in workflows] == ["hello"] and activities == []
