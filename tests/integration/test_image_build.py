"""The SD-card image build: what can be checked without root, a pi-gen checkout or an ARM box.

- every script of the pi-gen stage (and scripts/build-image) passes shellcheck and is laid
  out and marked executable the way pi-gen runs it;
- the stage creates every account and group the units run as, and what kiosk-ui runs;
- scripts/build-image assembles a pi-gen checkout (stage, bundle, config) correctly; the
  checkout here is a stand-in whose build script only records how it was called;
- the app bundle for this machine's architecture, built from PyPI by scripts/build-bundle,
  is signed, verifies, and installs offline into a fresh virtual environment where
  ``kiosk --version`` runs (needs PyPI: a service test, required in CI).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from edge.update.bundle import verify_bundle
from edge.update.hooks import VenvInstaller
from tests.conftest import need
from tests.helpers import REPO

STAGE = REPO / "scripts" / "pigen" / "stage-kiosk"
SCRIPTS = sorted(
    path
    for path in [*STAGE.rglob("*"), REPO / "scripts" / "build-image"]
    if path.is_file() and path.read_bytes()[:2] == b"#!" and b"sh" in path.read_bytes()[:40]
)
STAGE_TEXT = "\n".join(
    path.read_text(encoding="utf-8") for path in sorted(STAGE.rglob("*")) if path.is_file()
)
PIGEN_NAMES = re.compile(r"^[0-9]{2}-(run\.sh|run-chroot\.sh|packages|packages-nr|debconf)$")


def test_the_stage_has_its_scripts() -> None:
    names = {path.relative_to(STAGE).as_posix() for path in SCRIPTS if STAGE in path.parents}
    assert {"prerun.sh", "00-system/01-run-chroot.sh", "01-kiosk/01-run-chroot.sh"} <= names
    assert (STAGE / "EXPORT_IMAGE").is_file()


@pytest.mark.parametrize("script", SCRIPTS, ids=[str(p.relative_to(REPO)) for p in SCRIPTS])
def test_shellcheck(script: Path) -> None:
    need(shutil.which("shellcheck") is not None, "shellcheck (apt-get install shellcheck)")
    result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    assert script.stat().st_mode & stat.S_IXUSR, f"{script.name} must be executable"


def test_stage_files_are_named_as_pi_gen_runs_them() -> None:
    for substage in (path for path in STAGE.iterdir() if path.is_dir()):
        assert re.match(r"^[0-9]{2}-", substage.name), substage
        for item in substage.iterdir():
            assert item.name == "files" or PIGEN_NAMES.match(item.name), item


def unit_setting(unit: Path, key: str) -> list[str]:
    values: list[str] = []
    for line in unit.read_text(encoding="utf-8").splitlines():
        if line.startswith(f"{key}="):
            values += line.split("=", 1)[1].split()
    return values


# The kiosk's units, as scripts/build-bundle picks them: the cloud's run on a cloud host.
KIOSK_UNITS = [
    unit
    for unit in sorted((REPO / "systemd").glob("*.service"))
    if not unit.name.startswith("kiosk-cloud")
]


@pytest.mark.parametrize("unit", KIOSK_UNITS, ids=lambda p: p.name)
def test_the_stage_makes_the_accounts_each_unit_runs_as(unit: Path) -> None:
    for user in unit_setting(unit, "User"):
        assert re.search(rf"useradd [^\n]*(\\\n[^\n]*)* {user}\n", STAGE_TEXT), user
        for group in unit_setting(unit, "SupplementaryGroups"):
            assert re.search(rf"usermod -a -G \S*{group}\S* {user}\n", STAGE_TEXT), (user, group)


def test_the_stage_provides_what_the_rider_screen_runs() -> None:
    unit = REPO / "systemd" / "kiosk-ui.service"
    assert unit_setting(unit, "ExecStart") == ["/opt/kiosk/current/bin/kiosk-screen"]
    assert 'test -x "${target}/bin/kiosk-screen"' in STAGE_TEXT
    launcher = (REPO / "scripts" / "kiosk-screen").read_text(encoding="utf-8")
    packages = (STAGE / "00-system" / "00-packages-nr").read_text(encoding="utf-8").split()
    for package, program in [
        ("cage", "/usr/bin/cage"),
        ("swayidle", "/usr/bin/swayidle"),
        ("wlr-randr", "/usr/bin/wlr-randr"),
    ]:
        assert package in packages and program in launcher, package
        assert f"test -x {program}" in STAGE_TEXT, program
    assert "/usr/bin/chromium" in launcher and "test -x /usr/bin/chromium" in STAGE_TEXT
    rules = STAGE / "01-kiosk" / "files" / "70-kiosk-backlight.rules"
    assert "bl_power" in rules.read_text(encoding="utf-8") and rules.name in STAGE_TEXT
    assert re.search(r"usermod -a -G .*video.* kiosk-ui|for group in video", STAGE_TEXT)
    assert "groupadd --system kiosk-tech" in STAGE_TEXT
    assert "systemctl set-default graphical.target" in STAGE_TEXT  # kiosk-ui's WantedBy
    assert "ln -sfn /opt/kiosk/current/bin/kiosk /usr/local/bin/kiosk" in STAGE_TEXT


@pytest.mark.parametrize("name", ["kiosk-first-boot.service", "kiosk-first-boot.path"])
def test_first_boot_units_verify(name: str, tmp_path: Path) -> None:
    need(shutil.which("systemd-analyze") is not None, "systemd-analyze")
    files = STAGE / "01-kiosk" / "files"
    for unit in ("kiosk-first-boot.service", "kiosk-first-boot.path"):
        text = (files / unit).read_text(encoding="utf-8")
        (tmp_path / unit).write_text(text.replace("/usr/local/sbin/kiosk-first-boot", "/bin/true"))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / name)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "Unknown key" not in result.stderr, result.stderr


# -- scripts/build-image against a stand-in pi-gen checkout -----------------------------------


@pytest.fixture
def fake_pigen(tmp_path: Path) -> Path:
    pigen = tmp_path / "pi-gen"
    (pigen / "stage2").mkdir(parents=True)
    (pigen / "scripts").mkdir()
    (pigen / "scripts" / "common").write_text("BOOTSTRAP_ARGS+=(--arch arm64)\n")
    record = (
        '#!/bin/bash\necho "$@" > called.txt\nmkdir -p deploy && touch deploy/image-kiosk.img.xz\n'
    )
    for script in ("build.sh", "build-docker.sh"):
        (pigen / script).write_text(record)
        (pigen / script).chmod(0o755)
    return pigen


def build_image(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO / "scripts" / "build-image"), *args], capture_output=True, text=True, timeout=60
    )


def test_build_image_assembles_the_pi_gen_checkout(fake_pigen: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "kiosk-bundle-1.0"
    (bundle / "requirements").mkdir(parents=True)
    (bundle / "manifest.json").write_text("{}")
    (bundle / "requirements" / "aarch64.txt").write_text("")
    password = tmp_path / "password"
    password.write_text("it's a long $password\n")
    key = tmp_path / "id.pub"
    key.write_text("ssh-ed25519 AAAAC3Nza tech@laptop\n")
    release = tmp_path / "release.pem"
    made = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build-bundle"), "--make-key", str(release)],
        capture_output=True,
        text=True,
        check=True,
    )
    result = build_image(
        "--pi-gen",
        str(fake_pigen),
        "--bundle",
        str(bundle),
        "--password-file",
        str(password),
        "--ssh-key",
        str(key),
        "--wifi-country",
        "GB",
        "--sign-key",
        str(release),
        "--docker",
    )
    assert result.returncode == 0, result.stderr
    assert (fake_pigen / "called.txt").read_text() == "-c config.kiosk\n"
    stage = fake_pigen / "stage-kiosk"
    assert (stage / "01-kiosk" / "files" / "bundle" / "manifest.json").is_file()
    assert (stage / "01-kiosk" / "01-run-chroot.sh").stat().st_mode & stat.S_IXUSR
    assert (fake_pigen / "stage2" / "SKIP_IMAGES").exists()
    pinned = (stage / "01-kiosk" / "files" / "kiosk.toml").read_text()
    public = re.search(r'release_public_key = "[^"]+"', made.stdout)
    assert public is not None and pinned == f"[update]\n{public.group(0)}\n"
    shown = subprocess.run(
        [
            "bash",
            "-c",
            'source "$1"; printf "%s|" "$FIRST_USER_NAME" "$FIRST_USER_PASS" '
            '"$STAGE_LIST" "$DISABLE_FIRST_BOOT_USER_RENAME" "$PUBKEY_ONLY_SSH" "$WPA_COUNTRY" '
            '"$PUBKEY_SSH_FIRST_USER" "$RELEASE"',
            "-",
            str(fake_pigen / "config.kiosk"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert shown.split("|")[:-1] == [
        "technician",
        "it's a long $password",
        "stage0 stage1 stage2 stage-kiosk",
        "1",
        "1",
        "GB",
        "ssh-ed25519 AAAAC3Nza tech@laptop",
        "bookworm",
    ]
    assert stat.S_IMODE((fake_pigen / "config.kiosk").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("no password", "--password-file FILE is required"),
        ("short password", "at least 12 characters"),
        ("32-bit checkout", "not a 64-bit pi-gen checkout"),
        ("bad release", "bookworm or trixie"),
        ("no bundle manifest", "not an app bundle"),
        ("bad release key", "a base64 Ed25519 public key"),
    ],
)
def test_build_image_refuses_bad_input(
    fake_pigen: Path, tmp_path: Path, change: str, message: str
) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "requirements").mkdir(parents=True)
    (bundle / "requirements" / "aarch64.txt").write_text("")
    if change != "no bundle manifest":
        (bundle / "manifest.json").write_text("{}")
    password = tmp_path / "password"
    password.write_text("short\n" if change == "short password" else "a good long password\n")
    if change == "32-bit checkout":
        (fake_pigen / "scripts" / "common").write_text("BOOTSTRAP_ARGS+=(--arch armhf)\n")
    args = ["--pi-gen", str(fake_pigen), "--bundle", str(bundle), "--docker"]
    if change != "no password":
        args += ["--password-file", str(password)]
    if change == "bad release":
        args += ["--release", "jessie"]
    if change == "bad release key":
        args += ["--release-public-key", "not-a-key"]
    result = build_image(*args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert not (fake_pigen / "called.txt").exists()


def test_bundle_only_is_build_bundle() -> None:
    result = build_image("--bundle-only", "--help")
    assert result.returncode == 0 and "usage: build-bundle" in result.stdout


# -- the real bundle, from PyPI ---------------------------------------------------------------


def pypi_reachable() -> bool:
    try:
        return httpx.get("https://pypi.org/simple/pip/", timeout=10).status_code < 500
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="session")
def host_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The bundle for this machine's architecture, signed; built once per session."""
    need(pypi_reachable(), "PyPI (scripts/build-bundle downloads the wheelhouse)")
    work = tmp_path_factory.mktemp("bundle")
    script = str(REPO / "scripts" / "build-bundle")
    made = subprocess.run(
        [sys.executable, script, "--make-key", str(work / "release.pem")],
        capture_output=True,
        text=True,
        check=True,
    )
    public = re.search(r'release_public_key = "([^"]+)"', made.stdout)
    assert public is not None, made.stdout
    built = subprocess.run(
        [
            sys.executable,
            script,
            "--out",
            str(work / "out"),
            "--arch",
            platform.machine(),
            "--cache",
            str(work / "cache"),
            "--sign-key",
            str(work / "release.pem"),
            "--tar",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    (bundle,) = [path for path in (work / "out").glob("kiosk-bundle-*") if path.is_dir()]
    return bundle, public.group(1)


@pytest.mark.service
@pytest.mark.timeout(600)
def test_the_bundle_installs_offline_and_runs(
    host_bundle: tuple[Path, str], tmp_path: Path
) -> None:
    bundle, public = host_bundle
    manifest = verify_bundle(bundle, public, require_signature=True)
    assert (bundle.parent / f"{bundle.name}.tar").is_file()
    assert set(manifest.requirements) == {platform.machine()}
    lock = (REPO / "requirements-kiosk.lock").read_text(encoding="utf-8")
    pinned = {line.split("==")[0] for line in lock.splitlines() if re.match(r"^[a-z]", line)}
    listed = (bundle / manifest.requirements[platform.machine()]).read_text(encoding="utf-8")
    names = {line.split("==")[0] for line in listed.splitlines() if re.match(r"^[a-z]", line)}
    assert names == pinned  # every package of the kiosk's lock, each once
    assert not {"psycopg", "fastapi-offline", "face-recognition"} & names  # the cloud's, the tests'
    assert (bundle / "requirements.lock").read_text(encoding="utf-8") == lock
    # the image and `kiosk update` enable every unit of the bundle: never the cloud's
    assert "systemd/kiosk-cloud.service" not in manifest.units
    assert "systemd/kiosk-edge.service" in manifest.units

    target = tmp_path / "opt" / manifest.version
    VenvInstaller(Path(sys.executable), system_site_packages=False)(
        bundle, manifest, target, platform.machine()
    )  # no index: pip sees only the bundle's wheels, with their hashes
    shown = subprocess.run(
        [str(target / "bin" / "kiosk"), "--version"], capture_output=True, text=True, check=True
    )
    # the rider screen's launcher and its first page come with the app
    assert os.access(target / "bin" / "kiosk-screen", os.X_OK)
    assert list(target.glob("lib/python*/site-packages/edge/ui/launch/waiting.html"))
    assert shown.stdout == f"kiosk {manifest.version}\n"
    imports = subprocess.run(
        [
            str(target / "bin" / "python"),
            "-c",
            "import cv2, dlib, edge.runtime.loop, models; models.verify()",
        ],
        capture_output=True,
        text=True,
    )
    assert imports.returncode == 0, imports.stderr
