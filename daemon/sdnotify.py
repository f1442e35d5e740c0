"""sd_notify(3) without libsystemd: one datagram per message to $NOTIFY_SOCKET.

The protocol is small enough that a dependency would cost more than it saves: newline-separated
KEY=VALUE lines in one AF_UNIX datagram. A socket name starting with '@' lives in the abstract
namespace (its first byte is NUL on the wire). Outside systemd $NOTIFY_SOCKET is unset and every
call is a cheap no-op, so the daemon runs the same from a terminal.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Mapping

import structlog

log = structlog.get_logger(__name__)


def socket_address(value: str) -> str | bytes | None:
    """The address to send to: a filesystem path, or bytes with a leading NUL for '@name'."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock addresses (vsock:CID:PORT) are for VMs; a home-server daemon does not need them


def watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of $WATCHDOG_USEC, as sd_watchdog_enabled advises),
    or None when systemd did not ask this process for pings."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):  # meant for another process (e.g. a wrapper's parent)
        return None
    return int(usec) / 1e6 / 2


class Notifier:
    """Sends sd_notify messages; never raises (a lost status line must not stop the daemon)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = socket_address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_seconds = watchdog_interval(env)
        self._last_status = ""

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str | int) -> bool:
        """Send KEY=VALUE fields in one datagram; True when it was sent."""
        if self.address is None:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # MSG_DONTWAIT: a receiver that does not read (its queue holds only
                # net.unix.max_dgram_qlen datagrams, 10 by default) must not block the dispatcher,
                # which would then stop filing photos and never finish a SIGTERM.
                sock.sendto(message, socket.MSG_DONTWAIT, self.address)
        except OSError as exc:
            log.warning("sd_notify failed", socket=repr(self.address), reason=str(exc))
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send(READY=1, **({"STATUS": status} if status else {}))

    def reloading(self) -> bool:
        """RELOADING=1 with MONOTONIC_USEC, as Type=notify-reload (systemd >= 253) requires."""
        return self.send(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def stopping(self) -> bool:
        return self.send(STOPPING=1)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def status(self, text: str) -> bool:
        """STATUS=text, sent only when it changed (the worker calls this after every batch)."""
        if text == self._last_status:
            return False
        self._last_status = text
        return self.send(STATUS=text)
