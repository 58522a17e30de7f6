"""sd_notify: tell systemd the service is ready, alive, or stopping.

A datagram to ``$NOTIFY_SOCKET`` (a path, or an abstract socket when it starts with
``@``); outside systemd there is no socket and every call does nothing.
"""

from __future__ import annotations

import os
import socket


def watchdog_seconds() -> float | None:
    """The watchdog interval systemd asks for (``WatchdogSec=``), if any."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1_000_000
    except ValueError:
        return None


def notify(*states: str) -> bool:
    """Send ``states`` (``READY=1``, ``WATCHDOG=1``, ``STATUS=...``); False when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall("\n".join(states).encode())
    except OSError:
        return False
    return True
