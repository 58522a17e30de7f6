"""Settings that are each of a valid type but cannot work: a path that is relative, a
folder, a pipe or a device; numbers that contradict each other; text with a line break
where one line is needed; a host given as a URL. Each stops the command at start, exit 3,
naming the setting, instead of hanging, failing or quietly misbehaving later.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from edge.cli.main import app
from edge.cli.runner import run_app
from tests.helpers import run_cli

pytestmark = pytest.mark.timeout(120)


def check(capsys: pytest.CaptureFixture[str], path: Path, text: str) -> tuple[int, str]:
    path.write_text(text, encoding="utf-8")
    code = run_app(app, "kiosk", ["--log-format", "json", "config", "check", str(path)])
    return code, capsys.readouterr().err


def test_values_that_cannot_work_are_refused_by_config_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    folder = tmp_path / "folder"
    folder.mkdir()
    points = tmp_path / "points.json"
    points.write_text("{}", encoding="utf-8")
    settings = tmp_path / "kiosk.toml"
    for text, says in (
        (f'[kiosk]\nstate_dir = "{points}"\n', f"kiosk.state_dir: Value error, {points} is a file"),
        (f'[kiosk]\nstate_dir = "{fifo}"\n', "kiosk.state_dir: Value error, "),
        ('[kiosk]\nstate_dir = "state"\n', "kiosk.state_dir: Value error, must be an absolute"),
        (
            '[roster]\nkeys_dir = "/dev/null"\n',
            "roster.keys_dir: Value error, /dev/null is a device",
        ),
        (f'[sync]\nca_file = "{folder}"\n', "sync.ca_file: Value error, "),
        (f'[sync]\nca_file = "{tmp_path}/none.pem"\n', "sync.ca_file: Value error, "),
        (f'[mqtt]\nca_file = "{fifo}"\n', f"mqtt.ca_file: Value error, {fifo} is a pipe"),
        (f'[mqtt]\ncert_file = "{folder}"\n', "mqtt.cert_file: Value error, "),
        ('[vision]\noperating_points = "points.json"\n', "vision.operating_points: "),
        ('[update]\nroot = "opt"\n', "update.root: Value error, must be an absolute"),
        ('[update]\npython = "/dev"\n', "update.python: Value error, /dev is a folder"),
        ("[sync]\nbackoff_base_s = 60\nbackoff_max_s = 1\n", "sync: Value error, backoff_base_s"),
        (
            "[camera]\nreconnect_initial_s = 60\nreconnect_max_s = 1\n",
            "camera: Value error, reconnect_initial_s (60 s) must not exceed",
        ),
        (
            "[update]\nhealth_timeout_s = 10\nhealth_interval_s = 5\n",
            "update: Value error, health_timeout_s (10 s) is shorter",
        ),
        ("[roster]\npurge_after_h = 0.01\n", "roster.purge_after_h (0.01 h) must be at least"),
        ("[roster]\nmax_age_h = 0.1\n[sync]\nroster_interval_s = 600\n", "roster.max_age_h"),
        ('[kiosk]\nsite = "North\\nkiosk: error: fake"\n', "kiosk.site: Value error, must be one"),
        ('[kiosk]\nvehicle = "bus\\u0000"\n', "kiosk.vehicle: Value error, must be one line"),
        ('[mqtt]\nhost = "mqtt://mq.example.net:8883"\n', "mqtt.host: Value error, must be an IP"),
        ('[mqtt]\nusername = "a\\nb"\n', "mqtt.username: Value error, must be one line"),
    ):
        code, err = check(capsys, settings, text)
        assert code == 3 and says in err and "unexpected" not in err, (text, err)
    code, err = check(
        capsys,
        settings,
        f'[kiosk]\nsite = "Central station, north entrance"\nstate_dir = "{folder}"\n'
        f'[vision]\noperating_points = "{points}"\n[mqtt]\nhost = "mq.example.net"\n'
        "[roster]\npurge_after_h = 0.2\n[sync]\nroster_interval_s = 300\n",
    )
    assert code == 0, err


def test_a_pipe_as_the_ca_bundle_stops_sync_run_at_start_not_for_ever(tmp_path: Path) -> None:
    fifo = tmp_path / "ca.pem"
    os.mkfifo(fifo)  # nobody writes to it: reading it would block for ever
    env = {
        "KIOSK_KIOSK__STATE_DIR": str(tmp_path / "state"),
        "KIOSK_SYNC__CLOUD_URL": "http://127.0.0.1:9/",
        "KIOSK_SYNC__CA_FILE": str(fifo),
    }
    try:
        result = run_cli("sync", "run", env=env, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("kiosk sync run hung reading a pipe given as sync.ca_file")
    assert result.returncode == 3, result.stderr
    assert f"sync.ca_file: Value error, {fifo} is a pipe, not a file" in result.stderr
    assert not (tmp_path / "state").exists()


def test_a_cloud_database_url_without_a_file_is_one_line_naming_the_setting(
    tmp_path: Path,
) -> None:
    fifo = tmp_path / "roster.pem"
    os.mkfifo(fifo)
    for env, says in (
        ({"KIOSK_CLOUD_DATABASE_URL": "sqlite:///"}, "KIOSK_CLOUD_DATABASE_URL: Value error"),
        (
            {"KIOSK_CLOUD_DATABASE_URL": f"sqlite:///{tmp_path}"},
            f"KIOSK_CLOUD_DATABASE_URL: Value error, {tmp_path} is a folder",
        ),
        (
            {
                "KIOSK_CLOUD_DATABASE_URL": f"sqlite:///{tmp_path}/cloud.sqlite",
                "KIOSK_CLOUD_ROSTER_KEY_FILE": str(fifo),
            },
            f"KIOSK_CLOUD_ROSTER_KEY_FILE: Value error, {fifo} is a pipe",
        ),
        (
            {"KIOSK_CLOUD_MAX_BODY_BYTES": "8192", "KIOSK_CLOUD_MAX_DECODED_BYTES": "4096"},
            "KIOSK_CLOUD_MAX_DECODED_BYTES (4096) must not be below KIOSK_CLOUD_MAX_BODY_BYTES",
        ),
    ):
        try:
            result = run_cli(
                "serve", "--port", "9", env=env, cwd=tmp_path, timeout=30, program="kiosk-cloud"
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"kiosk-cloud serve did not stop at start with {env}")
        assert result.returncode == 3 and says in result.stderr, (env, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "cloud.sqlite").exists()
