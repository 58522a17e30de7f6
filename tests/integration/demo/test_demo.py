"""``kiosk demo``: the whole appliance on one machine, run as a person runs it.

Each run is a real process: the cloud API on loopback with SQLite, the board simulator on a
pty, the kiosk runtime with the real face model, the sync daemon and the rider page. The
tests read what a person would check afterwards: the cloud's database, the kiosk's outbox
and roster files, and what the command printed.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.browser import chromium
from tests.conftest import free_port
from tests.helpers import BIN, REPO, run_cli

ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


def _count(path: Path, table: str, column: str, text: str) -> int:
    with sqlite3.connect(path) as db:
        sql = f'SELECT COUNT(*) FROM "{table}" WHERE CAST("{column}" AS TEXT) LIKE ?'
        return int(db.execute(sql, (f"%{text}%",)).fetchone()[0])


def cloud_events(state: Path) -> list[dict[str, object]]:
    found = rows(
        state / "appliance" / "cloud" / "cloud.sqlite",
        "SELECT id, type, payload FROM events ORDER BY seq",
    )
    return [{"id": i, "type": t, "payload": json.loads(str(p))} for i, t, p in found]


@pytest.fixture(scope="module")
def default_demo(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """``kiosk demo`` as it comes, at debug level with JSON logs: run once, read by two tests
    (what it did, and what its log holds)."""
    state = tmp_path_factory.mktemp("default-demo")
    result = run_cli(
        "--debug", "--log-format", "json", "demo", "--state-dir", str(state), timeout=180
    )
    return state, result


def test_default_demo_rents_returns_and_refuses_and_the_cloud_has_it_all(
    default_demo: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    tmp_path, result = default_demo
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Take your powerbank from slot" in out  # no name on a public screen by default
    assert "Sorry, we could not recognise you" in out
    assert re.search(r"rider page: http://127\.0\.0\.1:\d+/", out)
    assert re.search(r"done in [\d.]+ s: 1 round\(s\), 1 rental\(s\), 1 return\(s\)", out)

    events = cloud_events(tmp_path)
    kinds = [event["type"] for event in events]
    assert kinds.count("rental.started") == 1 and kinds.count("rental.returned") == 1
    assert "face.unrecognised" in kinds and "kiosk.started" in kinds
    assert all(ULID.match(str(event["id"])) for event in events)
    started = next(e["payload"] for e in events if e["type"] == "rental.started")
    returned = next(e["payload"] for e in events if e["type"] == "rental.returned")
    assert isinstance(started, dict) and isinstance(returned, dict)
    # the round ends with the rider deleted in the cloud: its records name them by a
    # pseudonym since (docs/roster.md, "Erasure and retention"); the kiosk's own outbox
    # recorded the rental under the rider's id
    assert str(started["person_id"]).startswith("erased-")
    kiosk_started = rows(
        tmp_path / "appliance" / "kiosk" / "outbox.sqlite",
        "SELECT body FROM events WHERE type = 'rental.started'",
    )
    assert json.loads(str(kiosk_started[0][0]))["payload"]["person_id"] == "eileen-collins"
    # nothing in the cloud names her any more but the legal record: the tombstone the kiosks
    # need, her consent record and the audit log (docs/roster.md)
    cloud_file = tmp_path / "appliance" / "cloud" / "cloud.sqlite"
    naming = []
    for (table,) in rows(cloud_file, "SELECT name FROM sqlite_master WHERE type = 'table'"):
        for column in [str(c[1]) for c in rows(cloud_file, f"PRAGMA table_info('{table}')")]:
            found = _count(cloud_file, str(table), column, "eileen-collins")
            if found:
                naming.append(str(table))
    assert sorted(set(naming)) == ["audit_log", "consents", "roster_tombstones"]
    assert returned["powerbank_id"] == started["powerbank_id"]
    assert returned["slot"] != started["slot"]  # returned into another slot

    cloud_db = tmp_path / "appliance" / "cloud" / "cloud.sqlite"
    assert rows(cloud_db, "SELECT status FROM rentals") == [("closed",)]
    kiosk = tmp_path / "appliance" / "kiosk"
    # Every event the kiosk recorded reached the cloud, once.
    outbox = rows(kiosk / "outbox.sqlite", "SELECT id, state FROM events")
    assert {state for _, state in outbox} == {"sent"}
    assert sorted(str(i) for i, _ in outbox) == sorted(str(e["id"]) for e in events)
    # The rider was deleted in the cloud: the kiosk's roster holds nobody now.
    assert rows(kiosk / "roster.sqlite", "SELECT COUNT(*) FROM riders") == [(0,)]


def test_demo_with_real_riders_and_a_stranger(tmp_path: Path, dev_faces: Path) -> None:
    enroll = tmp_path / "enroll"
    for person in ("person_01", "person_02", "person_03"):
        (enroll / person).mkdir(parents=True)
        for photo in ("01.jpg", "02.jpg"):
            (enroll / person / photo).symlink_to(dev_faces / person / photo)
    stranger = dev_faces / "person_06" / "01.jpg"
    result = run_cli(
        "demo", "--enroll", str(enroll), "--stranger", str(stranger),
        "--state-dir", str(tmp_path / "state"), timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "operator added rider person_03" in result.stdout
    events = cloud_events(tmp_path / "state")
    started = [e["payload"] for e in events if e["type"] == "rental.started"]
    assert [p["person_id"] for p in started if isinstance(p, dict)] == ["person_01"]
    assert any(e["type"] == "face.unrecognised" for e in events)
    # With a stranger, nobody is deleted: the kiosk still holds all three riders.
    roster = tmp_path / "state" / "appliance" / "kiosk" / "roster.sqlite"
    assert rows(roster, "SELECT COUNT(*) FROM riders") == [(3,)]


def test_no_template_or_image_reaches_the_logs(
    default_demo: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    """The whole appliance, at debug level, writes nothing biometric to its log."""
    tmp_path, result = default_demo
    assert result.returncode == 0, result.stdout + result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert records, "the demo wrote no log records"

    def numbers_in(value: object) -> int:
        if isinstance(value, dict):
            return max((numbers_in(item) for item in value.values()), default=0)
        if isinstance(value, list):
            own = sum(isinstance(item, (int, float)) for item in value)
            return max([own, *(numbers_in(item) for item in value)])
        return 0

    for record in records:
        assert numbers_in(record) < 16, record
    text = result.stderr + result.stdout
    # no dump of binary data (four escaped bytes in a row) and no picture's signature; a
    # random id may well contain the letters PNG
    assert not re.search(r"(\\x[0-9a-f]{2}){4}", text), "escaped bytes in the output"
    for signature in ("\\x89PNG", "IHDR", "JFIF", "\\xff\\xd8\\xff"):
        assert signature not in text, signature
    # The template of the rider's photo: none of its values may appear in the output.
    from models.encoder import FaceEngine
    from models.images import read_image

    engine = FaceEngine()
    photo = tmp_path / "samples" / "enroll" / "eileen-collins" / "portrait.png"
    observation = engine.observe(read_image(photo))
    assert observation is not None
    for value in observation.encoding[:8]:
        # its first 5 decimals (a value printed at any longer precision starts with them),
        # not inside a longer number: a timestamp's 10.021160 holds 0.02116
        digits = f"{abs(value):.10f}"[:7]
        leaked = re.search(rf"(?<![\d.]){re.escape(digits)}", text)
        assert leaked is None, leaked


def test_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    (broken / "ann").mkdir(parents=True)
    (broken / "ann" / "01.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    cases = [
        (["--enroll", str(tmp_path / "missing")], 4, f"--enroll {tmp_path / 'missing'}"),
        (["--stranger", str(tmp_path / "nobody.jpg")], 4, "--stranger"),
        (["--enroll", str(broken)], 4, "no rider could be enrolled"),
        (["--rounds", "0"], 2, "--rounds"),
    ]
    for args, code, words in cases:
        result = run_cli("demo", *args, "--state-dir", str(tmp_path / "state"))
        assert result.returncode == code, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert words in result.stderr, (args, result.stderr)
        if code == 4:
            assert len(lines) <= 2 and lines[-1].startswith("kiosk: error: "), result.stderr
            assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = run_cli(
        "--debug", "demo", "--enroll", str(tmp_path / "missing"), "--state-dir", str(tmp_path)
    )
    assert result.returncode == 4
    assert "Traceback" in result.stderr


def test_missing_model_file_is_one_clear_line(tmp_path: Path) -> None:
    """A broken install (a model file gone) stops the demo before any work, with exit 5."""
    package = tmp_path / "site" / "face_recognition_models"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("", encoding="utf-8")
    result = run_cli(
        "demo", "--state-dir", str(tmp_path / "state"), env={"PYTHONPATH": str(tmp_path / "site")}
    )
    assert result.returncode == 5, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "dlib_face_recognition_resnet_model_v1.dat is missing" in lines[0]


class RunningDemo:
    """``kiosk demo`` as a background process whose printed lines are collected."""

    def __init__(self, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KIOSK_")}
        self.process = subprocess.Popen(
            [str(BIN / "kiosk"), "demo", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if found := re.search(pattern, line):
                    return found
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.1)
        raise AssertionError(f"the demo never printed {pattern!r}:\n" + "\n".join(self.lines))

    def go_on(self) -> None:
        """Press Enter: the demo's pause ends."""
        assert self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)


def screen_title(key: str) -> str:
    """How the rider page's title for ``key`` starts, in English (before any {value})."""
    strings = json.loads((REPO / "edge" / "ui" / "strings" / "en.json").read_text("utf-8"))
    return str(strings[key]["title"]).split("{")[0].strip().lower()


# Keeps, in the page itself, every text the rider page shows, so that no screen goes unseen
# however briefly it stays up.
RECORD_SCREENS = """
window.__screens = [];
const note = () => {
  const text = (document.body && document.body.innerText || "").trim().toLowerCase();
  if (text && window.__screens[window.__screens.length - 1] !== text) window.__screens.push(text);
};
new MutationObserver(note).observe(document, {subtree: true, childList: true, characterData: true, attributes: true});
"""


def http_get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=10)


def wait_http(url: str, status: int, timeout: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = http_get(url)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


@pytest.mark.service
def test_a_running_demo_is_inspected_with_the_cli_and_its_page_walks_the_round(
    tmp_path: Path,
) -> None:
    """While the demo pauses between steps, the technician's CLI, /healthz and /metrics
    answer about it; a real Chromium on its rider page sees every screen of the round."""
    port = free_port()
    demo = RunningDemo("--state-dir", str(tmp_path), "--port", str(port), "--pause", "10")
    try:
        page_url = demo.wait_for(r"rider page: (http://127\.0\.0\.1:(\d+)/)").group(1)
        assert page_url == f"http://127.0.0.1:{port}/"
        config = demo.wait_for(r"kiosk --config (\S+) status").group(1)
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 800, "height": 480})
            page.add_init_script(RECORD_SCREENS)
            page.goto(page_url)
            demo.wait_for(r"\(pause 10 s, Enter goes on\)")

            # /healthz and /metrics of the real kiosk; /healthz says 503 in maintenance.
            health = http_get(page_url + "healthz")
            assert health.status_code == 200 and health.json()["checks"]["board"] is True
            metrics = http_get(page_url + "metrics")
            assert metrics.status_code == 200 and "kiosk_info{" in metrics.text
            cli = ("--config", config)
            assert run_cli(*cli, "maintenance", "on", "--reason", "demo").returncode == 0
            held = wait_http(page_url + "healthz", 503)
            assert held.status_code == 503, held.text
            assert run_cli(*cli, "maintenance", "off").returncode == 0
            assert wait_http(page_url + "healthz", 200).status_code == 200

            # The CLI, pointed at the demo as it printed, answers about the demo's kiosk.
            status = run_cli(*cli, "status", "--json")
            report = json.loads(status.stdout)
            assert report["runtime"]["running"] is True, status.stdout
            assert report["runtime"]["pid"] == demo.process.pid
            assert report["board"]["ok"] is True, report["board"]
            slots = run_cli(*cli, "slots", "--cached", "--json")
            assert slots.returncode == 0, slots.stderr
            docked = [s for s in json.loads(slots.stdout)["slots"] if s["powerbank_id"]]
            # the demo's cabinet: 6 slots, 4 powerbanks (one may be out with the rider)
            assert len(json.loads(slots.stdout)["slots"]) == 6 and len(docked) >= 3
            events = run_cli(*cli, "events", "tail", "--json")
            kinds = [json.loads(line)["type"] for line in events.stdout.splitlines()]
            assert {"kiosk.started", "roster.applied", "kiosk.maintenance"} <= set(kinds), kinds

            # what was to be checked during the pause is checked: Enter goes on at once
            for number in range(1, 4):
                deadline = time.monotonic() + 120
                while sum("(pause 10 s" in line for line in demo.lines) < number:
                    assert time.monotonic() < deadline, "\n".join(demo.lines)
                    time.sleep(0.05)
                demo.go_on()
            assert demo.process.wait(timeout=240) == 0, "\n".join(demo.lines)
            seen: list[str] = page.evaluate("window.__screens")
    finally:
        demo.stop()

    def first(key: str) -> int:
        title = screen_title(key)
        found = [i for i, text in enumerate(seen) if title in text]
        assert found, f"the page never showed {key!r} ({title!r}): {seen}"
        return found[0]

    # The round, in order, on the page: idle, the powerbank to take, the return, the
    # unknown face; and out of service while the technician had maintenance on.
    order = [first(key) for key in ("idle", "take", "returned", "not_recognised")]
    assert order == sorted(order), seen
    assert first("out_of_service") >= 0
    # Afterwards the demo's kiosk is stopped, and its status says so.
    after = run_cli("--config", config, "status", "--json")
    assert json.loads(after.stdout)["runtime"]["running"] is False
