"""scripts/flash on real disk-image files (sfdisk, mkfs.vfat, mtools); no root needed."""

from __future__ import annotations

import csv
import importlib.machinery
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import need
from tests.helpers import REPO

FLASH = REPO / "scripts" / "flash"
TOKEN = "tok_0123456789abcdefXYZ"


def load_flash() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("flash_script", str(FLASH))
    spec = importlib.util.spec_from_loader("flash_script", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["flash_script"] = module  # dataclasses look their module up while building
    loader.exec_module(module)
    return module


def tools() -> None:
    for tool in ("sfdisk", "mkfs.vfat", "mcopy", "mtype"):
        need(shutil.which(tool) is not None, f"{tool} (apt-get install fdisk dosfstools mtools)")


def sh(*args: str, stdin: str | None = None) -> str:
    return subprocess.run(
        args,
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
        env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    ).stdout


@pytest.fixture
def os_image(tmp_path: Path) -> Path:
    """A small stand-in for the kiosk image: a FAT boot partition and a Linux one."""
    tools()
    image = tmp_path / "kiosk.img"
    with image.open("wb") as handle:
        handle.truncate(24 * 1024 * 1024)
    sh(
        "sfdisk",
        "--quiet",
        str(image),
        stdin="label: dos\nstart=2048, size=16384, type=c\nstart=18432, type=83\n",
    )
    sh("mkfs.vfat", "--offset", "2048", str(image), "8192")
    config = tmp_path / "config.txt"
    config.write_text("arm_64bit=1\n", encoding="utf-8")
    sh("mcopy", "-i", f"{image}@@{2048 * 512}", str(config), "::config.txt")
    with image.open("r+b") as handle:  # something recognisable in the root partition
        handle.seek(18432 * 512)
        handle.write(b"ROOTFS-MARKER")
    return image


def flash(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(FLASH), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def card_args(kiosk_id: str = "kiosk-0042") -> list[str]:
    return [
        "--kiosk-id",
        kiosk_id,
        "--site",
        "North gate",
        "--cloud-url",
        "https://cloud.example",
        "--token",
        TOKEN,
    ]


def read_boot(target: Path, name: str) -> str:
    return sh("mtype", "-i", f"{target}@@{2048 * 512}", f"::{name}")


def test_write_one_card(os_image: Path, tmp_path: Path) -> None:
    target = tmp_path / "card.img"
    result = flash(
        "write", str(os_image), str(target), *card_args(), "--timezone", "Europe/Madrid", "--yes"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK   kiosk-0042")
    provisioning = read_boot(target, "kiosk-provision.toml")
    assert 'kiosk_id = "kiosk-0042"' in provisioning
    assert f'token = "{TOKEN}"' in provisioning
    assert 'timezone = "Europe/Madrid"' in provisioning
    assert read_boot(target, "config.txt") == "arm_64bit=1\n"
    with target.open("rb") as handle:
        handle.seek(18432 * 512)
        assert handle.read(13) == b"ROOTFS-MARKER"


def test_batch_writes_every_card_and_reports(os_image: Path, tmp_path: Path) -> None:
    kiosks = tmp_path / "kiosks.csv"
    with kiosks.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["target", "kiosk_id", "site", "cloud_url", "token", "wifi_ssid", "wifi_psk"]
        )
        writer.writerow(
            [tmp_path / "a.img", "kiosk-a1", "A", "https://c.example", TOKEN + "a", "", ""]
        )
        writer.writerow(
            [
                tmp_path / "b.img",
                "kiosk-b2",
                "B",
                "https://c.example",
                TOKEN + "b",
                "Depot",
                "secretpass",
            ]
        )
    result = flash("batch", str(os_image), "--kiosks", str(kiosks), "--yes")
    assert result.returncode == 0, result.stderr
    assert "2 of 2 card(s) written and verified" in result.stdout
    assert 'kiosk_id = "kiosk-a1"' in read_boot(tmp_path / "a.img", "kiosk-provision.toml")
    second = read_boot(tmp_path / "b.img", "kiosk-provision.toml")
    assert 'kiosk_id = "kiosk-b2"' in second and 'wifi_ssid = "Depot"' in second


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--kiosk-id", "Kiosk 42"], "kiosk_id 'Kiosk 42' must be"),
        (["--cloud-url", "ftp://x"], "cloud_url 'ftp://x' is not an http(s) URL"),
        (["--token", "short"], "token must be 16-256"),
        (["--wifi-ssid", "Depot"], "wifi_ssid and wifi_psk go together"),
        (["--timezone", "Mars Base"], "timezone 'Mars Base' is not a zone name"),
    ],
)
def test_bad_provisioning_data_writes_nothing(
    os_image: Path, tmp_path: Path, change: list[str], message: str
) -> None:
    target = tmp_path / "card.img"
    result = flash("write", str(os_image), str(target), *card_args(), *change, "--yes")
    assert result.returncode == 2
    assert message in result.stderr
    assert not target.exists()


def test_truncated_image_is_refused(os_image: Path, tmp_path: Path) -> None:
    short = tmp_path / "short.img"
    short.write_bytes(os_image.read_bytes()[: 10 * 1024 * 1024])
    result = flash("write", str(short), str(tmp_path / "card.img"), *card_args(), "--yes")
    assert result.returncode == 2
    assert "truncated" in result.stderr


def test_missing_field_in_csv_names_the_line(os_image: Path, tmp_path: Path) -> None:
    kiosks = tmp_path / "kiosks.csv"
    kiosks.write_text(
        f"target,kiosk_id,site,cloud_url,token\n{tmp_path}/a.img,kiosk-a,A,,{TOKEN}\n",
        encoding="utf-8",
    )
    result = flash("batch", str(os_image), "--kiosks", str(kiosks), "--yes")
    assert result.returncode == 2
    assert "line 2: provisioning: cloud_url is missing" in result.stderr


def test_no_write_without_consent(os_image: Path, tmp_path: Path) -> None:
    result = flash("write", str(os_image), str(tmp_path / "card.img"), *card_args())
    assert result.returncode == 2
    assert "without --yes" in result.stderr
    assert not (tmp_path / "card.img").exists()


def test_system_disk_and_mounted_devices_are_refused(os_image: Path) -> None:
    """check_target only inspects; it is called directly so no test can ever write a disk."""
    flash_module = load_flash()
    root_source = next(
        line.split()[0]
        for line in Path("/proc/mounts").read_text().splitlines()
        if line.split()[1] == "/"
    )
    need(
        root_source.startswith("/dev/") and Path(root_source).exists(),
        "a block device mounted at /",
    )
    with pytest.raises(flash_module.FlashError, match=r"system disk|is mounted"):
        flash_module.check_target(Path(root_source), os_image, 1)


def test_target_cannot_be_the_image(os_image: Path) -> None:
    result = flash("write", str(os_image), str(os_image), *card_args(), "--yes")
    assert result.returncode == 1
    assert "is the image itself" in result.stdout
