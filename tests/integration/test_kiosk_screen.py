"""The rider screen's launcher: kiosk.toml's [ui] -> ``kiosk screen env`` -> the unit's
environment -> ``kiosk-screen``'s command lines (its --dry-run prints them).

This machine has no touch screen, cage or Wayland session, so stand-ins answer for cage's
help text (old cage rotates with -r, newer cage through wlr-randr) and for wlr-randr's list
of outputs; everything else is the real script, the real CLI and the shipped unit.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO, run_cli

SCRIPT = REPO / "scripts" / "kiosk-screen"
UNIT = REPO / "systemd" / "kiosk-ui.service"

#: The flags a locked-down kiosk browser needs, each one checked against Chromium's sources.
LOCKDOWN_FLAGS = (
    "--kiosk",
    "--noerrdialogs",
    "--no-first-run",
    "--no-default-browser-check",
    "--hide-crash-restore-bubble",
    "--incognito",
    "--password-store=basic",
    "--ozone-platform=wayland",
    "--touch-events=enabled",
    "--disable-pinch",
    "--overscroll-history-navigation=0",
    "--disable-features=TranslateUI",
    "--check-for-update-interval=31536000",
)


def stand_in(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\n" + text, encoding="utf-8")
    path.chmod(0o755)
    return path


@pytest.fixture
def programs(tmp_path: Path) -> dict[str, str]:
    """Stand-ins: cage 0.1.4 (-r in its help), a later cage, wlr-randr with two outputs."""
    return {
        "OLD_CAGE": str(stand_in(tmp_path, "cage-0.1.4", r"printf ' -r\t Rotate the output 90 degrees clockwise\n'")),
        "NEW_CAGE": str(stand_in(tmp_path, "cage-0.2", r"printf ' -s\t Allow VT switching\n'")),
        "WLR_RANDR": str(stand_in(tmp_path, "wlr-randr", "printf 'HDMI-A-1 \"Monitor\"\\n  Enabled: yes\\nDSI-1 \"Touch\"\\n'")),
        "CHROMIUM": "/bin/true",
        "SWAYIDLE": "/bin/true",
    }  # fmt: skip


def screen(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SCREEN_", "CAGE"))}
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, env={**base, **env}, check=False
    )


def lines(result: subprocess.CompletedProcess[str]) -> list[list[str]]:
    assert result.returncode == 0, result.stderr
    return [shlex.split(line) for line in result.stdout.splitlines()]


def test_the_browser_runs_locked_down_on_the_starting_page(programs: dict[str, str]) -> None:
    start = "file:///opt/kiosk/waiting.html?to=http%3A%2F%2F127.0.0.1%3A8080%2F&lang=en"
    env = {**programs, "SCREEN_START": start, "SCREEN_PROFILE": "/run/kiosk-ui/chromium"}
    (browser,) = lines(screen("--inside", "--dry-run", env=env))
    assert browser[0] == "exec:" and browser[1] == "/bin/true"
    for flag in LOCKDOWN_FLAGS:
        assert flag in browser, flag
    assert "--user-data-dir=/run/kiosk-ui/chromium" in browser  # thrown away at each stop
    assert browser[-1] == start  # the waiting page, never the rider page straight away
    assert not any(flag in browser for flag in ("--no-sandbox", "--remote-debugging-port"))


@pytest.mark.parametrize("rotation, turns", [("0", 0), ("90", 1), ("180", 2), ("270", 3)])
def test_old_cage_rotates_the_output_itself(
    programs: dict[str, str], rotation: str, turns: int
) -> None:
    env = {**programs, "CAGE": programs["OLD_CAGE"], "SCREEN_ROTATION": rotation}
    (outer,) = lines(screen("--dry-run", env=env))
    assert outer[:2] == ["exec:", programs["OLD_CAGE"]]
    assert outer.count("-r") == turns
    assert "-s" not in outer  # no switching to another console from the rider screen
    assert outer[outer.index("--") + 1 :] == [str(SCRIPT), "--inside"] + (
        ["--rotated"] if turns else []
    )
    if turns:  # cage turned it: no wlr-randr inside
        inner = lines(screen("--inside", "--rotated", "--dry-run", env=env))
        assert [line[1] for line in inner] == ["/bin/true"]


def test_newer_cage_rotates_every_output_with_wlr_randr(programs: dict[str, str]) -> None:
    env = {**programs, "CAGE": programs["NEW_CAGE"], "SCREEN_ROTATION": "90"}
    (outer,) = lines(screen("--dry-run", env=env))
    assert "-r" not in outer and outer[-1] == "--inside"
    inner = lines(screen("--inside", "--dry-run", env=env))
    randr = programs["WLR_RANDR"]
    assert inner[:2] == [
        ["run:", randr, "--output", "HDMI-A-1", "--transform", "90"],
        ["run:", randr, "--output", "DSI-1", "--transform", "90"],
    ]
    assert inner[2][0] == "exec:"


def test_blanking_is_a_setting(programs: dict[str, str]) -> None:
    never = lines(screen("--inside", "--dry-run", env={**programs}))
    assert [line[0] for line in never] == ["exec:"]  # default: the screen never blanks
    env = {**programs, "SCREEN_BLANK_AFTER_S": "300"}
    idle, browser = lines(screen("--inside", "--dry-run", env=env))
    assert idle[:5] == ["run:", "/bin/true", "-w", "timeout", "300"]
    assert idle[5] == f"{SCRIPT} --backlight off"
    assert idle[6:] == ["resume", f"{SCRIPT} --backlight on"]
    assert browser[0] == "exec:"


def test_the_backlight_goes_off_and_on(tmp_path: Path) -> None:
    panel = tmp_path / "backlight" / "11-0045"
    panel.mkdir(parents=True)
    (panel / "bl_power").write_text("0\n", encoding="utf-8")
    env = {"SCREEN_BACKLIGHT": str(tmp_path / "backlight")}
    assert screen("--backlight", "off", env=env).returncode == 0
    assert (panel / "bl_power").read_text(encoding="utf-8") == "4\n"
    assert screen("--backlight", "on", env=env).returncode == 0
    assert (panel / "bl_power").read_text(encoding="utf-8") == "0\n"
    nothing = screen("--backlight", "off", env={"SCREEN_BACKLIGHT": str(tmp_path / "none")})
    assert nothing.returncode == 0 and "no backlight" in nothing.stderr


@pytest.mark.parametrize(
    "env, args, code, words",
    [
        ({"SCREEN_ROTATION": "45"}, ["--inside"], 2, "SCREEN_ROTATION=45: 0, 90, 180 or 270"),
        ({"SCREEN_BLANK_AFTER_S": "soon"}, ["--inside"], 2, "a number of seconds, or never"),
        ({}, ["--backlight", "dim"], 2, "--backlight on or off"),
        ({}, ["--fullscreen"], 2, "unknown argument: --fullscreen"),
        ({"CAGE": "/nonexistent/cage"}, [], 127, "/nonexistent/cage is missing"),
        ({"CHROMIUM": "/nonexistent/chromium"}, ["--inside"], 127, "chromium is missing"),
    ],
)
def test_bad_settings_are_one_clear_line(
    programs: dict[str, str], env: dict[str, str], args: list[str], code: int, words: str
) -> None:
    result = screen(*args, "--dry-run", env={**programs, **env})
    assert result.returncode == code, result.stdout
    assert result.stderr.strip().splitlines() == [f"kiosk-screen: {words}"] or (
        words in result.stderr and len(result.stderr.strip().splitlines()) == 1
    ), result.stderr


def unit_line(key: str) -> str:
    found = re.findall(rf"^{key}=(.*)$", UNIT.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert len(found) == 1, (key, found)
    return found[0]


def read_environment_file(path: Path) -> dict[str, str]:
    """As systemd's EnvironmentFile= reads the simple KEY=value lines."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines)


def test_kiosk_toml_reaches_the_browser_through_the_unit(
    programs: dict[str, str], tmp_path: Path
) -> None:
    """The unit's own ExecStartPre, EnvironmentFile and ExecStart, run here in order."""
    config = tmp_path / "kiosk.toml"
    config.write_text(
        '[kiosk]\nstate_dir = "{}"\n[ui]\nport = 8090\nlanguage = "es"\nrotation = 180\n'
        "blank_after_s = 600\n".format(tmp_path / "state"),
        encoding="utf-8",
    )
    pre = shlex.split(unit_line("ExecStartPre"))
    assert pre[0] == "-+/opt/kiosk/current/bin/kiosk"  # as root; the defaults if it fails
    env_file = unit_line("EnvironmentFile")
    assert env_file == "-/run/kiosk-ui/screen.env" and pre[-1] == env_file[1:]
    assert unit_line("ExecStart") == "/opt/kiosk/current/bin/kiosk-screen"
    assert unit_line("RuntimeDirectory") == "kiosk-ui"

    written = tmp_path / "screen.env"
    made = run_cli("--config", str(config), *pre[1:-1], str(written))
    assert made.returncode == 0, made.stderr
    assert oct(written.stat().st_mode & 0o777) == "0o644"  # kiosk-ui reads it
    values = read_environment_file(written)
    assert values["SCREEN_URL"] == "http://127.0.0.1:8090/"
    assert values["SCREEN_ROTATION"] == "180" and values["SCREEN_BLANK_AFTER_S"] == "600"
    waiting = REPO / "edge" / "ui" / "launch" / "waiting.html"
    assert values["SCREEN_START"] == (
        f"{waiting.as_uri()}?to=http%3A%2F%2F127.0.0.1%3A8090%2F&lang=es"
    )

    env = {**programs, **values, "CAGE": programs["OLD_CAGE"]}
    (outer,) = lines(screen("--dry-run", env=env))
    assert outer.count("-r") == 2
    idle, browser = lines(screen("--inside", "--rotated", "--dry-run", env=env))
    assert idle[4] == "600" and browser[-1] == values["SCREEN_START"]


def test_screen_env_refuses_settings_the_screen_cannot_use(tmp_path: Path) -> None:
    for toml, words in [
        ("[ui]\nport = 0\n", "ui.port: 0 picks a free port"),
        ("[ui]\nrotation = 45\n", "ui.rotation"),
        ('[ui]\nblank_after_s = "soon"\n', "ui.blank_after_s"),
        ("[ui]\nblank_after_s = 5\n", "ui.blank_after_s"),
    ]:
        config = tmp_path / "kiosk.toml"
        config.write_text(toml, encoding="utf-8")
        result = run_cli("--config", str(config), "screen", "env")
        assert result.returncode == 3, (toml, result.stdout)
        assert words in result.stderr and "Traceback" not in result.stderr, result.stderr
