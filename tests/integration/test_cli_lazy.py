"""``kiosk`` and ``kiosk-cloud`` answer ``--help`` and ``--version`` without importing the
command modules, and list their commands exactly as the fully built app does."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer._click.utils import make_default_short_help

from cloud_sync import cli as cloud_cli
from cloud_sync.lazy_cli import LazyCommand, LazyGroup, load_all
from edge.cli import main as kiosk_cli
from edge.cli.runner import run_app


def clean_env() -> dict[str, str]:
    """This environment without KIOSK_* settings, so nothing from outside steers a run."""
    return {key: value for key, value in os.environ.items() if not key.startswith("KIOSK_")}


#: What the help and version of either command must never pull in.
HEAVY = ("numpy", "cv2", "dlib", "fastapi", "httpx", "sqlite_utils", "uvicorn", "psycopg")

ENTRY = {"kiosk": "edge.cli.main", "kiosk-cloud": "cloud_sync.cli"}
APPS = {"kiosk": kiosk_cli.app, "kiosk-cloud": cloud_cli.app}
ROWS: dict[str, tuple[LazyCommand, ...]] = {
    "kiosk": kiosk_cli.COMMANDS,
    "kiosk-cloud": cloud_cli.COMMANDS,
}


def imported_by(
    tmp_path: Path, prog: str, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``prog args`` in a fresh interpreter; its result and every module loaded at exit."""
    listing = tmp_path / "modules.json"
    code = (
        "import atexit, json, sys\n"
        f"atexit.register(lambda: open({str(listing)!r}, 'w').write(json.dumps(list(sys.modules))))\n"
        f"sys.argv[0] = {prog!r}\n"
        f"from {ENTRY[prog]} import main\n"
        "main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**clean_env(), **(env or {})},
    )
    return result, set(json.loads(listing.read_text(encoding="utf-8")))


LIGHT_CALLS = [
    ("kiosk", ("--help",)),
    ("kiosk", ("--version",)),
    ("kiosk", ()),
    ("kiosk-cloud", ("--help",)),
    ("kiosk-cloud", ()),
]


@pytest.mark.parametrize(
    ("prog", "args"), LIGHT_CALLS, ids=[" ".join((prog, *args)) for prog, args in LIGHT_CALLS]
)
def test_help_and_version_import_no_command_module(
    tmp_path: Path, prog: str, args: tuple[str, ...]
) -> None:
    result, modules = imported_by(tmp_path, prog, *args)
    assert result.returncode in (0, 2), result.stderr[-2000:]
    shown = result.stdout + result.stderr  # a bare command prints its help to stderr
    assert "Usage:" in shown or result.stdout.startswith("kiosk "), shown
    heavy = sorted(name for name in modules if name.split(".")[0] in HEAVY)
    assert not heavy, f"{prog} {' '.join(args)} imported {heavy[:10]}"
    targets = {row.target.partition(":")[0] for row in ROWS[prog]} - {ENTRY[prog]}
    assert not modules & targets, f"{prog} {' '.join(args)} imported {sorted(modules & targets)}"


def test_kiosk_version_answers_before_the_app_is_built(tmp_path: Path) -> None:
    result, modules = imported_by(tmp_path, "kiosk", "--version")
    assert result.returncode == 0
    assert re.fullmatch(r"kiosk \S+\n", result.stdout)
    assert "edge.settings" not in modules
    assert "pydantic" not in modules


def test_one_command_imports_only_its_own_module(tmp_path: Path) -> None:
    result, modules = imported_by(tmp_path, "kiosk", "config", "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "edge.cli.config_cmd" in modules
    assert "edge.cli.enroll_cmd" not in modules
    assert "edge.cli.roster_cmd" not in modules
    assert "check" in result.stdout


@pytest.mark.parametrize("prog", ["kiosk", "kiosk-cloud"])
def test_each_row_states_its_commands_first_sentence(prog: str) -> None:
    built = load_all(APPS[prog])
    for row in ROWS[prog]:
        help_text = built[row.name].help or ""
        assert make_default_short_help(help_text, 10_000) == row.summary, row.name


@pytest.mark.parametrize("prog", ["kiosk", "kiosk-cloud"])
@pytest.mark.parametrize("width", [60, 80, 120, 200])
def test_the_lazy_listing_is_the_built_one(prog: str, width: int) -> None:
    lazy = typer.main.get_group(APPS[prog])
    built = typer.main.get_group(APPS[prog])
    list(built.commands.values())  # build every command of the second group only
    assert isinstance(lazy, LazyGroup)
    assert not any(lazy.lazy_commands.loaded(row.name) for row in ROWS[prog])

    def listing(group: typer.core.TyperGroup) -> str:
        ctx = group.make_context(prog, [], resilient_parsing=True, terminal_width=width)
        return group.get_help(ctx)

    text = listing(lazy)
    assert text == listing(built)
    for row in ROWS[prog]:
        assert re.search(rf"^  {re.escape(row.name)} ", text, flags=re.MULTILINE), row.name


def test_a_mistyped_command_is_refused_with_a_suggestion(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = run_app(kiosk_cli.app, "kiosk", ["statu"])
    err = capsys.readouterr().err
    assert code == 2
    assert "No such command 'statu'. Did you mean 'status'?" in err


def test_a_command_name_twice_is_refused() -> None:
    from cloud_sync.lazy_cli import lazy_group

    row = LazyCommand("x", "edge.cli.main:main", "X.")
    with pytest.raises(ValueError, match="twice"):
        lazy_group((row, row))


def test_status_loads_only_what_the_state_folder_needs(tmp_path: Path) -> None:
    from cloud_sync.outbox import Outbox
    from edge.vault.live import open_roster
    from tests.vault_helpers import record

    state = tmp_path / "state"
    state.mkdir()
    env = {"KIOSK_KIOSK__ID": "kiosk-0042", "KIOSK_KIOSK__STATE_DIR": str(state)}

    result, modules = imported_by(tmp_path, "kiosk", "status", "--json", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["roster"]["ok"] is False
    loaded = {name.split(".")[0] for name in modules}
    assert not loaded & {"numpy", "cv2", "dlib", "sqlite_utils", "httpx", "fastapi"}, loaded

    outbox = Outbox(state / "outbox.sqlite", "kiosk-0042")
    outbox.append("rental.returned", slot=1, powerbank_id="PB-1")
    outbox.close()
    store = open_roster(state / "roster.sqlite", state / "keys", "kiosk-0042")
    store.enrol("rider-1", record("Rider 1", 1))
    store.close()
    result, modules = imported_by(tmp_path, "kiosk", "status", "--json", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["roster"]["riders"] == 1 and report["outbox"]["pending"] == 1
    loaded = {name.split(".")[0] for name in modules}
    assert not loaded & {"cv2", "dlib", "httpx", "fastapi"}, loaded
