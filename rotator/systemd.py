"""The sd_notify protocol, so systemd knows when rotator is ready, alive, reloading or stopping.

A datagram of `KEY=VALUE` lines to the AF_UNIX socket named by `$NOTIFY_SOCKET` (a leading `@`
means the abstract namespace); see sd_notify(3). Small enough that a dependency would be larger
than the protocol. Outside systemd (no `NOTIFY_SOCKET`) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

logger = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends sd_notify messages; never raises (systemd being gone must not stop rotation)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        # WATCHDOG_PID, when set, names the process the watchdog is meant for.
        mine = not pid or (pid.isdigit() and int(pid) == os.getpid())
        self.watchdog_seconds = int(usec) / 1e6 if usec.isdigit() and mine else None

    def notify(self, **fields: str | int) -> bool:
        """Send one message, e.g. `notify(READY=1, STATUS="3 tokens")`; True when sent."""
        if not self._address:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self._address)
                sock.sendall(message.encode())
        except OSError as exc:
            logger.warning("sd_notify failed: %s", exc.strerror or exc)
            return False
        return True

    def ready(self, status: str) -> None:
        self.notify(READY=1, STATUS=status)

    def status(self, status: str) -> None:
        self.notify(STATUS=status)

    def watchdog(self) -> None:
        self.notify(WATCHDOG=1)

    def reloading(self, monotonic_usec: int) -> None:
        self.notify(RELOADING=1, MONOTONIC_USEC=monotonic_usec)

    def stopping(self) -> None:
        self.notify(STOPPING=1)
