"""``kiosk status | doctor | events | maintenance`` on real files, and the JSON of every
read command checked against its schema in ``edge/ops/schemas``."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from jsonschema import Draft202012Validator, FormatChecker  # type: ignore[import-untyped]

from cloud_sync.outbox import Outbox
from edge.cli.main import app
from edge.cli.runner import run_app
from edge.ops.runtime_status import Component, new_status, write_runtime_status
from edge.vault.live import open_roster
from edge.vision.policy import load_operating_points
from hardware.sim import BoardSimulator
from hardware.sim_board import SimConfig
from tests.conftest import REPO
from tests.helpers import BIN
from tests.vault_helpers import record as vault_record

pytestmark = pytest.mark.timeout(60)

SCHEMAS = REPO / "edge" / "ops" / "schemas"
KIOSK = "kiosk-0042"
formats = FormatChecker()


@formats.checks("date-time", raises=ValueError)  # type: ignore[untyped-decorator]
def _date_time(value: object) -> bool:
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise ValueError("no time zone")
    return True


def valid(schema: str, data: Any) -> Any:
    document = json.loads((SCHEMAS / f"{schema}.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(document)
    errors = sorted(
        Draft202012Validator(document, format_checker=formats).iter_errors(data), key=str
    )
    assert not errors, f"{schema}: " + "; ".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]
    )
    return data


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "state"
    folder.mkdir()
    monkeypatch.setenv("KIOSK_KIOSK__ID", KIOSK)
    monkeypatch.setenv("KIOSK_KIOSK__STATE_DIR", str(folder))
    monkeypatch.setenv("KIOSK_BOARD__TIMEOUT_S", "0.1")
    monkeypatch.setenv("KIOSK_BOARD__RETRIES", "1")
    monkeypatch.setenv("COLUMNS", "200")  # rich tables on one line per row
    return folder


def kiosk(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run_app(app, "kiosk", ["--log-format", "json", *args])
    out, err = capsys.readouterr()
    return code, out, err


def record(state_dir: Path, count: int, start: datetime | None = None) -> None:
    moments = iter([start + timedelta(hours=i) for i in range(count)] if start else [])

    def clock() -> datetime:
        return next(moments, None) or datetime.now(UTC)

    outbox = Outbox(state_dir / "outbox.sqlite", KIOSK, clock=clock)
    for index in range(count):
        outbox.append("rental.returned", slot=1 + index % 8, powerbank_id=f"PB-{index}")
    outbox.close()


def test_status_reads_the_runtime_report_files_and_databases(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = kiosk(capsys, "status", "--json")
    assert code == 0
    bare = valid("status", json.loads(out))
    assert bare["runtime"]["running"] is False and bare["camera"]["ok"] is None
    assert bare["outbox"]["ok"] is None and not bare["ok"]

    record(state_dir, 3)
    open_roster(state_dir / "roster.sqlite", state_dir / "keys", KIOSK).close()
    write_runtime_status(
        state_dir,
        new_status(
            version="0.1.0", mode="rental", phase="idle",
            camera=Component(ok=True, detail="replay 640x480"),
            board=Component(ok=False, detail="no answer for 12 s"),
            mqtt=Component(ok=True, detail="connected"),
        ),
    )  # fmt: skip
    code, out, _ = kiosk(capsys, "status", "--json")
    report = valid("status", json.loads(out))
    assert report["runtime"]["running"] and report["runtime"]["phase"] == "idle"
    assert report["camera"] == {"ok": True, "detail": "replay 640x480"}
    assert report["board"]["ok"] is False
    assert report["outbox"]["pending"] == 3 and report["outbox"]["pending_by_class"]["money"] == 3
    assert report["roster"]["riders"] == 0 and report["roster"]["version"] == 0
    assert any(problem.startswith("board: ") for problem in report["problems"])
    code, out, _ = kiosk(capsys, "status")
    assert code == 0 and "replay 640x480" in out and "pending" in out

    (state_dir / "runtime.json").write_text("{not json", encoding="utf-8")
    code, out, _ = kiosk(capsys, "status", "--json")
    assert code == 0 and valid("status", json.loads(out))["runtime"]["running"] is False


def test_maintenance_on_and_off_set_the_flag_and_name_the_operator(
    state_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = kiosk(capsys, "maintenance", "on", "--reason", "replacing the latch")
    assert code == 0 and "operator" in out
    status = valid(
        "maintenance-status", json.loads(kiosk(capsys, "maintenance", "status", "--json")[1])
    )
    assert status["on"] and status["reason"] == "replacing the latch" and status["via"] == "cli"
    report = json.loads(kiosk(capsys, "status", "--json")[1])
    assert report["maintenance"]["on"] and report["maintenance"]["operator"] == status["operator"]
    assert kiosk(capsys, "maintenance", "off")[0] == 0
    assert json.loads(kiosk(capsys, "maintenance", "status", "--json")[1]) == {"on": False}
    code, out, _ = kiosk(capsys, "events", "tail", "--json")
    events = [valid("events-line", json.loads(line)) for line in out.splitlines()]
    assert [(e["type"], e["payload"]["on"]) for e in events] == [
        ("kiosk.maintenance", True), ("kiosk.maintenance", False)
    ]  # fmt: skip
    assert {e["payload"]["operator"] for e in events} == {status["operator"]}

    monkeypatch.setattr("os.getuid", lambda: 54321)  # someone else: not root, not the owner
    monkeypatch.setattr("os.getgroups", lambda: [54321])
    monkeypatch.setattr("os.getgid", lambda: 54321)
    code, _, err = kiosk(capsys, "maintenance", "on")
    assert code == 10 and "kiosk-tech" in err
    assert json.loads(kiosk(capsys, "maintenance", "status", "--json")[1]) == {"on": False}


def test_events_tail_and_export_in_a_time_range(
    state_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert kiosk(capsys, "events", "tail")[0] == 4  # no outbox yet
    record(state_dir, 10, start=datetime(2026, 1, 1, tzinfo=UTC))
    code, out, _ = kiosk(capsys, "events", "tail", "-n", "3", "--json")
    lines = [valid("events-line", json.loads(line)) for line in out.splitlines()]
    assert [line["seq"] for line in lines] == [8, 9, 10]
    code, out, _ = kiosk(capsys, "events", "tail", "-n", "2")
    assert code == 0 and "rental.returned" in out and "PB-9" in out

    target = tmp_path / "range.jsonl"
    code, _, err = kiosk(capsys, "events", "export", "--since", "2026-01-01T02:00",
                         "--until", "2026-01-01T05:00", "--output", str(target))  # fmt: skip
    assert code == 0 and "exported 3 events" in err
    exported = [valid("events-line", json.loads(line)) for line in target.read_text().splitlines()]
    assert [e["seq"] for e in exported] == [3, 4, 5]
    code, out, _ = kiosk(
        capsys, "events", "export", "--format", "csv", "--since", "2026-01-01T08:00Z"
    )
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [row["seq"] for row in rows] == ["9", "10"]
    assert json.loads(rows[0]["payload"]) == {"slot": 1, "powerbank_id": "PB-8", "charge": None}
    assert kiosk(capsys, "events", "export", "--since", "tomorrow-ish")[0] == 4
    assert kiosk(capsys, "events", "export", "--format", "xml")[0] == 4


def test_events_tail_follow_prints_new_events(state_dir: Path) -> None:
    record(state_dir, 1)
    env = {"KIOSK_KIOSK__ID": KIOSK, "KIOSK_KIOSK__STATE_DIR": str(state_dir)}
    follower = subprocess.Popen(
        [str(BIN / "kiosk"), "--log-format", "json", "events", "tail", "--follow", "--json",
         "--interval", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    try:
        assert follower.stdout is not None
        assert json.loads(follower.stdout.readline())["seq"] == 1
        record(state_dir, 1)
        assert valid("events-line", json.loads(follower.stdout.readline()))["seq"] == 2
    finally:
        follower.terminate()
        follower.wait(10)


class _Healthy(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def cloud_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Healthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_doctor_opens_the_camera_and_board_unless_the_runtime_holds_them(
    state_dir: Path,
    tmp_path: Path,
    cloud_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "0001.png"), np.full((120, 160, 3), 128, dtype=np.uint8))
    monkeypatch.setenv("KIOSK_CAMERA__SOURCE", str(frames))
    monkeypatch.setenv("KIOSK_CAMERA__FPS", "50")
    monkeypatch.setenv("KIOSK_SYNC__CLOUD_URL", cloud_url)
    with BoardSimulator(SimConfig(slots=4, seed=1, firmware="sim-9")) as sim:
        monkeypatch.setenv("KIOSK_BOARD__URL", sim.path)
        code, out, _ = kiosk(capsys, "doctor", "--json", "--skip", "models")
    report = valid("doctor", json.loads(out))
    outcome = {check["name"]: check for check in report["checks"]}
    assert outcome["camera"]["outcome"] == "pass" and "160x120" in outcome["camera"]["detail"]
    assert outcome["board"]["outcome"] == "pass" and "sim-9" in outcome["board"]["detail"]
    assert outcome["cloud"]["outcome"] == "pass"
    assert outcome["models"]["outcome"] == "skip"
    assert outcome["roster"]["outcome"] == "fail" and outcome["roster"]["fix"]
    assert code == 9 and report["ok"] is False

    write_runtime_status(
        state_dir, new_status(camera=Component(ok=False, detail="no frame for 30 s"))
    )
    code, out, _ = kiosk(capsys, "doctor", "--json", "--skip", "models", "--skip", "cloud")
    outcome = {check["name"]: check for check in valid("doctor", json.loads(out))["checks"]}
    assert outcome["camera"]["outcome"] == "fail"
    assert outcome["camera"]["detail"] == "kiosk run reports: no frame for 30 s"
    assert outcome["board"]["outcome"] == "warn"  # the runtime does not report it yet
    code, out, _ = kiosk(capsys, "doctor", "--skip", "models", "--skip", "cloud")
    assert code == 9 and "no frame for 30 s" in out
    assert kiosk(capsys, "doctor", "--skip", "everything")[0] == 4


def test_key_files_readable_by_others_fail_the_doctor(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    open_roster(state_dir / "roster.sqlite", state_dir / "keys", KIOSK).close()
    (state_dir / "keys" / "kiosk-x25519.pem").chmod(0o644)
    skip = [arg for name in ("camera", "board", "models", "cloud") for arg in ("--skip", name)]
    _, out, _ = kiosk(capsys, "doctor", "--json", *skip)
    keys = next(c for c in json.loads(out)["checks"] if c["name"] == "keys")
    assert keys["outcome"] == "fail" and keys["fix"].startswith("chmod 600 ")


def test_the_other_read_commands_match_their_schemas(
    state_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    record(state_dir, 2)
    code, out, _ = kiosk(capsys, "sync", "status", "--json")
    assert code == 0 and valid("sync-status", json.loads(out))["pending_total"] == 2
    roster = state_dir / "roster.sqlite"
    open_roster(roster, state_dir / "keys", KIOSK).close()
    code, out, _ = kiosk(capsys, "roster", "info", "--json")
    assert code == 0 and valid("roster-info", json.loads(out))["riders"] == 0
    with BoardSimulator(SimConfig(slots=4, seed=2, eject_s=0.05)) as sim:
        monkeypatch.setenv("KIOSK_BOARD__URL", sim.path)
        monkeypatch.setenv("KIOSK_BOARD__SLOTS", "4")
        code, out, _ = kiosk(capsys, "slots", "--json")
        assert code == 0 and valid("slots", json.loads(out))["source"] == "board"
    code, out, _ = kiosk(capsys, "slots", "--json", "--cached")
    cached = valid("slots", json.loads(out))
    assert cached["source"] == "cached" and len(cached["slots"]) == 4


def test_status_says_when_the_roster_is_past_the_face_policy_s_calibration(
    state_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_roster(state_dir / "roster.sqlite", state_dir / "keys", KIOSK)
    for n in range(3):
        store.enrol(f"rider-{n}", vault_record(f"Rider {n}", n))
    store.close()
    code, out, _ = kiosk(capsys, "status", "--json")
    assert code == 0
    shipped = valid("status", json.loads(out))["roster"]
    assert shipped["riders"] == 3 and shipped["claim_for_everyone"] is False
    points = load_operating_points()
    points["identify"]["points"] = [{"people": 2, "threshold": 2.0}]
    (state_dir / "points.json").write_text(json.dumps(points), encoding="utf-8")
    monkeypatch.setenv("KIOSK_VISION__OPERATING_POINTS", str(state_dir / "points.json"))
    code, out, _ = kiosk(capsys, "status", "--json")
    roster = valid("status", json.loads(out))["roster"]
    assert code == 0 and roster["claim_for_everyone"] is True
    assert "3 riders, more than the 2 the face policy is calibrated for" in roster["detail"]
    (state_dir / "points.json").write_text("{not json", encoding="utf-8")
    code, out, _ = kiosk(capsys, "status", "--json")  # reported, not a crash
    roster = valid("status", json.loads(out))["roster"]
    assert code == 0 and roster["ok"] is False
    assert "is not an operating-points file" in roster["detail"]


def test_logs_without_a_journal_says_so(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("edge.cli.ops_cmd.shutil.which", lambda name: None)
    code, _, err = kiosk(capsys, "logs", "-n", "5")
    assert code == 8 and "journalctl is not available on this machine" in err


def test_config_show_json_matches_the_settings_schema(capsys: pytest.CaptureFixture[str]) -> None:
    """``kiosk config show --json`` is the settings model itself: its own JSON Schema (with
    ``additionalProperties: false`` everywhere) validates it, and a wrong value would not."""
    from edge.settings import Settings

    schema = Settings.model_json_schema(mode="serialization")
    code, out, _ = kiosk(capsys, "config", "show", "--json")
    data = json.loads(out)
    assert code == 0
    assert not list(Draft202012Validator(schema).iter_errors(data))
    data["board"]["baudrate"] = "fast"
    data["camera"]["colour"] = "red"
    assert len(list(Draft202012Validator(schema).iter_errors(data))) == 2
