"""Power cuts on demand: a folder on LazyFS (``../shared/lazyfs``), which keeps every byte
written in its own cache until it is fsynced and drops what is not on ``clear-cache``.

``PowerFolder.mount()`` mounts it; ``cut()`` is a power cut (the caller has SIGKILLed the
processes that use it: un-fsynced data is dropped, LazyFS killed, the folder unmounted);
``mount()`` again is the reboot. ``prove_it_drops()`` writes without fsync and cuts: the
data must be gone, or no test of the suite means anything (it fails, never skips, there).
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.conftest import need

BUILD = Path(os.environ.get("LAZYFS_BUILD_DIR", "/tmp/lazyfs-build"))
BUILD_SCRIPT = Path(__file__).resolve().parents[4] / "shared" / "lazyfs" / "build.sh"


class LazyFSError(RuntimeError):
    """LazyFS did not mount, answer or unmount."""


def lazyfs_binary() -> Path:
    """The built LazyFS; fails in CI (``KIOSK_REQUIRE_SERVICES=1``) when it is missing."""
    binary = BUILD / "lazyfs"
    need(
        binary.is_file() and Path("/dev/fuse").exists() and shutil.which("fusermount3") is not None,
        f"LazyFS at {binary} with /dev/fuse and fusermount3 (bash {BUILD_SCRIPT} {BUILD})",
    )
    return binary


class PowerFolder:
    """A folder whose un-fsynced writes a power cut drops."""

    def __init__(self) -> None:
        # LazyFS takes a --config-path holding "-o" (as in pytest-of-root) for an option
        work = Path(tempfile.mkdtemp(prefix="kiosk_power_"))
        self.work = work
        self.root = work / "disk"  # what the SD card keeps
        self.path = work / "mnt"  # what the appliance sees
        self.fifo = work / "faults.fifo"
        self.done_fifo = work / "done.fifo"
        self.log = work / "lazyfs.log"
        self.cuts = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._done_fd: int | None = None
        for folder in (self.root, self.path):
            folder.mkdir(parents=True, exist_ok=True)
        for fifo in (self.fifo, self.done_fifo):
            if not fifo.exists():
                os.mkfifo(fifo)
        self.config = work / "lazyfs.toml"
        # the cache holds what is not fsynced yet: 256 MB is far more than a test writes
        # between two fsyncs, and LazyFS starts in a fraction of the time 1 GB takes
        self.config.write_text(
            f'[faults]\nfifo_path="{self.fifo}"\nfifo_path_completed="{self.done_fifo}"\n'
            '[cache]\napply_eviction=false\n[cache.simple]\ncustom_size="256mb"\n'
            'blocks_per_page=1\n[filesystem]\nlog_all_operations=false\nlogfile=""\n'
        )

    def mount(self) -> None:
        """Mount (boot): the folder shows what the disk holds."""
        binary = lazyfs_binary()
        if self._done_fd is None:  # opened read-write: LazyFS's open for writing never waits
            self._done_fd = os.open(self.done_fifo, os.O_RDWR | os.O_NONBLOCK)
        with self.log.open("ab") as out:
            self._process = subprocess.Popen(
                [
                    str(binary),
                    str(self.path),
                    "--config-path",
                    str(self.config),
                    "-o",
                    "allow_other",
                    "-o",
                    "modules=subdir",
                    "-o",
                    f"subdir={self.root}",
                    "-f",
                ],
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        deadline = time.monotonic() + 20
        while not os.path.ismount(self.path):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self._stop_process()
                raise LazyFSError(f"LazyFS did not mount {self.path}: {self._log_tail()}")
            time.sleep(0.02)

    def cut(self) -> None:
        """The power goes: drop what is not fsynced, then unmount."""
        self._command("lazyfs::clear-cache", "finished::clear-cache")
        self.cuts += 1
        self.unmount()

    def mounted(self) -> bool:
        """Whether the folder is in the mount table (a dead FUSE mount included)."""
        target = os.path.realpath(self.path)
        with open("/proc/self/mounts", encoding="utf-8") as table:
            return any(line.split()[1] == target for line in table if line.strip())

    def unmount(self) -> None:
        self._stop_process()
        if self.mounted():
            subprocess.run(["fusermount3", "-uz", str(self.path)], check=False)
        deadline = time.monotonic() + 10
        while self.mounted():
            if time.monotonic() > deadline:
                raise LazyFSError(f"{self.path} stays mounted")
            time.sleep(0.02)

    def close(self) -> None:
        self.unmount()
        if self._done_fd is not None:
            os.close(self._done_fd)
            self._done_fd = None
        shutil.rmtree(self.work, ignore_errors=True)

    def prove_it_drops(self) -> None:
        """An un-fsynced write must be gone after a cut, an fsynced one kept."""
        kept, lost = self.path / "power-check-kept", self.path / "power-check-lost"
        with kept.open("wb") as out:
            out.write(b"fsynced")
            out.flush()
            os.fsync(out.fileno())
        with lost.open("r+b" if lost.exists() else "wb") as out:
            out.write(b"not fsynced")
        self.cut()
        self.mount()
        survived = lost.read_bytes() if lost.exists() else b""
        if kept.read_bytes() != b"fsynced" or survived:
            raise LazyFSError(
                f"LazyFS does not cut the power here: an un-fsynced write left {survived!r}, "
                f"an fsynced one {kept.read_bytes()!r}; no power-loss test would mean anything"
            )
        kept.unlink()
        lost.unlink(missing_ok=True)

    # -- LazyFS itself ---------------------------------------------------------------------

    def _command(self, command: str, finished: str) -> None:
        if self._process is None or self._process.poll() is not None:
            raise LazyFSError(f"LazyFS is not running: {self._log_tail()}")
        assert self._done_fd is not None
        fd = os.open(self.fifo, os.O_WRONLY)
        try:
            os.write(fd, f"{command}\n".encode())
        finally:
            os.close(fd)
        answer = b""
        deadline = time.monotonic() + 30
        while finished.encode() not in answer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LazyFSError(f"LazyFS did not finish {command!r}: {self._log_tail()}")
            ready, _, _ = select.select([self._done_fd], [], [], left)
            if ready:
                answer += os.read(self._done_fd, 4096)

    def _stop_process(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-1500:] if self.log.exists() else ""
