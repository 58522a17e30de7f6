"""The ``kiosk`` command frame: help, the README's tables, errors as one line and an exit code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer

from cloud_sync.cli import app as cloud_app
from edge.cli.exits import EXIT_CODES
from edge.cli.main import app as kiosk_app
from tests.helpers import REPO, run_cli

README = (REPO / "README.md").read_text(encoding="utf-8")

GROUPS = (
    "run",
    "demo",
    "status",
    "slots",
    "eject",
    "sync",
    "roster",
    "events",
    "enroll",
    "faces",
    "doctor",
    "provision",
    "config",
)


def command_paths(app: typer.Typer, prog: str) -> list[tuple[str, Any]]:
    """Every command and sub-command under ``app``, as the words a person types."""
    found: list[tuple[str, Any]] = []

    def walk(command: Any, words: str) -> None:
        found.append((words, command))
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{words} {name}")

    root = typer.main.get_command(app)
    for name, sub in root.commands.items():  # type: ignore[attr-defined]
        walk(sub, f"{prog} {name}")
    return found


ALL_COMMANDS = command_paths(kiosk_app, "kiosk") + command_paths(cloud_app, "kiosk-cloud")


def test_help_lists_every_command_group() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    listed = set(re.findall(r"^  (\S+)\s", result.stdout, flags=re.MULTILINE))
    assert set(GROUPS) <= listed


@pytest.mark.parametrize(
    ("words", "command"), ALL_COMMANDS, ids=[words for words, _ in ALL_COMMANDS]
)
def test_every_command_has_help_and_a_readme_row(words: str, command: Any) -> None:
    assert (command.help or command.short_help or "").strip(), f"{words} has no help text"
    assert re.search(rf"`{re.escape(words)}(`| )", README), (
        f"{words} is missing from the README's command table"
    )


def test_readme_exit_code_table_matches_the_code() -> None:
    documented = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", README, flags=re.MULTILINE))
    for row in EXIT_CODES:
        assert str(row.code) in documented, f"exit code {row.code} is not in the README"
        assert row.meaning in documented[str(row.code)], (
            f"the README's exit {row.code} does not say {row.meaning!r} ({row.error.__name__})"
        )
    assert {"0", "1", "2"} <= set(documented)


def test_an_error_is_one_line_and_its_exit_code(tmp_path: Path) -> None:
    missing = tmp_path / "kiosk-provision.toml"
    result = run_cli("provision", "--from", str(missing), "--root", str(tmp_path / "root"))
    assert result.returncode == 4
    assert (
        result.stderr.strip()
        == f"kiosk: error: {missing}: no such file, and this kiosk was never provisioned"
    )
    assert not (tmp_path / "root").exists()


def test_config_check_accepts_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "kiosk.toml"
    path.write_text(
        '[kiosk]\nid = "kiosk-0007"\n[board]\nurl = "socket://127.0.0.1:7000"\n', encoding="utf-8"
    )
    result = run_cli("config", "check", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{path}: valid"


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        ('[camera]\nfps = "lots"\n', "camera.fps", "Input should be a valid number"),
        ("[camera]\nzoom = 2\n", "camera.zoom", "unknown setting"),
        (
            "[vision]\nmatch_threshold = 5.0\n",
            "vision.match_threshold",
            "Input should be less than 0.8",
        ),
        *(  # a pinned key anyone can sign for (small order) or no point of the curve at all
            (f'[{section}]\n{name} = "{key}"\n', f"{section}.{name}", reason)
            for section, name in (
                ("roster", "cloud_roster_key"),
                ("update", "release_public_key"),
                ("mqtt", "command_public_key"),
            )
            for key, reason in (
                (
                    "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                    "Value error, is a point of small",
                ),
                ("AgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "Value error, is not a point"),
            )
        ),
    ],
)
def test_config_check_names_the_field_and_the_reason(
    tmp_path: Path, text: str, field: str, reason: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    result = run_cli("config", "check", str(path))
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"kiosk: error: {path}: {field}: {reason}")
    assert "Traceback" not in result.stderr


def test_config_check_on_a_missing_file(tmp_path: Path) -> None:
    result = run_cli("config", "check", str(tmp_path / "nope.toml"))
    assert result.returncode == 3
    assert result.stderr.strip() == f"kiosk: error: {tmp_path / 'nope.toml'}: no such file"


def test_config_show_prints_effective_settings_with_secrets_redacted(tmp_path: Path) -> None:
    secrets = tmp_path / "credentials"
    secrets.mkdir()
    (secrets / "mqtt__password").write_text("broker-pass-123", encoding="utf-8")
    config = tmp_path / "kiosk.toml"
    config.write_text('[kiosk]\nid = "kiosk-0009"\n', encoding="utf-8")
    env = {"CREDENTIALS_DIRECTORY": str(secrets), "KIOSK_BOARD__BAUDRATE": "57600"}
    result = run_cli("--config", str(config), "config", "show", env=env)
    assert result.returncode == 0, result.stderr
    assert 'id = "kiosk-0009"' in result.stdout
    assert "baudrate = 57600" in result.stdout
    assert 'password = "**********"' in result.stdout
    assert "broker-pass-123" not in result.stdout + result.stderr
    as_json = run_cli("--config", str(config), "config", "show", "--json", env=env)
    assert '"password": "**********"' in as_json.stdout


def test_bad_config_fails_before_any_work(tmp_path: Path) -> None:
    config = tmp_path / "kiosk.toml"
    config.write_text("[board]\nbaudrate = -1\n", encoding="utf-8")
    result = run_cli("--config", str(config), "demo", "--state-dir", str(tmp_path / "state"))
    assert result.returncode == 3
    assert "board.baudrate" in result.stderr
    assert not (tmp_path / "state").exists()


def test_usage_errors_exit_2() -> None:
    result = run_cli("demo", "--no-such-option")
    assert result.returncode == 2
    assert "No such option" in result.stderr


def test_kiosk_cloud_help() -> None:
    result = run_cli("--help", program="kiosk-cloud")
    assert result.returncode == 0
    assert "serve" in result.stdout
