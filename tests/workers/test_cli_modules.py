"""``chronik worker MODULE`` imports the user's module from the current directory."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from workers.cli import cli
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


def _load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> str:
    """Write ``source`` as a fresh module, load it, return the one-line error."""
    name = f"app_{abs(hash(source)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(click.BadParameter) as error:
        load_definitions((name,))
    return error.value.format_message()


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "def (\n",
            r"importing 'app_\d+' raised SyntaxError: invalid syntax \(app_\d+\.py, line 1\)",
        ),
        (
            "x = 1\nraise RuntimeError('no config')\n",
            r"raised RuntimeError: no config \(at .*app_\d+\.py, line 2\)",
        ),
        ("import no_such_package_anywhere\n", r"cannot import .*no_such_package_anywhere"),
        (
            APP.replace("[hello]", "hello"),
            r"WORKFLOWS of module 'app_\d+' must be a list, not <fun",
        ),
        ("def f(): ...\nWORKFLOWS = [f]\n", r"holds <function f .*not a @workflow.defn workflow"),
        (
            "def f(): ...\nACTIVITIES = (f,)\n",
            r"holds <function f .*not an @activity.defn activity",
        ),
        (
            APP + "\n@workflow.defn(name='hello')\nasync def again() -> None: ...\n"
            "WORKFLOWS = [hello, again]\n",
            r"workflow type 'hello' is defined twice: in module 'app_\d+' and in module 'app_\d+'",
        ),
    ],
    ids=[
        "syntax",
        "raises",
        "import",
        "not-a-list",
        "undecorated",
        "undecorated-activity",
        "twice",
    ],
)
def test_a_broken_module_is_one_line_naming_what_is_wrong(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, expected: str
) -> None:
    assert re.search(expected, _load(tmp_path, monkeypatch, source))


def test_the_same_workflow_listed_by_two_modules_is_loaded_once() -> None:
    workflows, _ = load_definitions(("examples.approval", "examples.approval"))
    assert len(workflows) == 1


def test_one_argument_may_list_several_modules() -> None:
    """docker-compose.yml passes CHRONIK_APP as one argument; its comment says modules."""
    workflows, activities = load_definitions(("examples.order examples.approval,",))
    names = sorted(getattr(w, "__name__", "") for w in workflows)
    assert names == ["Approval", "one_activity", "process_order"] and len(activities) == 5


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ("examples/approval.py",),
            "is a path: name the module as Python imports it ('examples.approval')",
        ),
        (("examples.approval", "--role", "activity"), "--role activity needs ACTIVITIES"),
        (("examples.order", "--max-concurrent-activities", "0"), "0 is not in the range x>=1"),
        (("examples.order", "--retention-seconds", "-5"), "-5.0 is not in the range x>=0"),
    ],
    ids=["path", "role-without-activities", "no-activity-slots", "negative-retention"],
)
def test_worker_arguments_are_checked_before_anything_connects(
    args: tuple[str, ...], expected: str
) -> None:
    """No broker at this address: each of these must fail before connecting, as a usage
    error (exit code 2), not as a traceback from deep inside the worker."""
    done = CliRunner().invoke(
        cli, ["--bootstrap-servers", "127.0.0.1:1", "worker", *args, "-q", "orders"]
    )
    assert done.exit_code == 2, done.output
    assert expected in done.output and "Traceback" not in done.output


@pytest.mark.parametrize("namespace", ["bad ns", "", "a/b", "x" * 240])
def test_a_namespace_kafka_cannot_name_topics_with_is_refused_up_front(namespace: str) -> None:
    done = CliRunner().invoke(
        cli, ["--bootstrap-servers", "127.0.0.1:1", "--namespace", namespace, "topics", "check"]
    )
    assert done.exit_code == 2
    assert "cannot prefix Kafka topic names" in done.output


def test_a_state_dir_the_worker_cannot_use_is_refused_before_it_connects(tmp_path: Path) -> None:
    """A file given as --state-dir ended the worker with NotADirectoryError from the store,
    once its first partition was assigned."""
    taken = tmp_path / "a-file"
    taken.write_text("x")
    for args in (
        ["worker", "examples.order", "-q", "orders", "--state-dir", str(taken)],
        ["timers", "--state-dir", str(taken / "below")],
    ):
        done = CliRunner().invoke(cli, ["--bootstrap-servers", "127.0.0.1:1", *args])
        assert done.exit_code == 2, done.output
        assert "Invalid value for '--state-dir': cannot use" in done.output
        assert "Traceback" not in done.output
    done = CliRunner().invoke(
        cli, ["worker", "examples.order", "-q", "o", "--state-dir", str(taken)]
    )
    assert "it is a file, not a directory" in done.output


@pytest.mark.parametrize("group", [[], ["kafka"], ["topics"], ["history"], ["dlq"], ["workflow"]])
def test_command_listings_are_not_cut_short_on_an_80_column_terminal(group: list[str]) -> None:
    """`chronik --help` listed "Fire due timers of the namespace; pair with `chronik
    worker..." and three more cut mid-sentence."""
    done = CliRunner().invoke(cli, [*group, "--help"], terminal_width=80)
    assert done.exit_code == 0
    listing = done.output.split("Commands:\n", 1)[1]
    assert "..." not in listing, listing
