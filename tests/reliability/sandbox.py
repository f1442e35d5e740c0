"""Run a command with the file-system view of the hardened systemd unit, without systemd.

    unshare --mount --net python tests/reliability/sandbox.py [--deny-write-execute] --rw DIR ... -- COMMAND...

Inside the new mount namespace (private, so nothing here is seen outside it): each --rw folder
is bind-mounted onto itself, then every other mount but /proc, /sys and /dev is remounted
read-only (ProtectSystem=strict with ReadWritePaths=), and COMMAND is executed in place of this
process (same pid, so signals reach it). `unshare --net` leaves only a loopback device that is
down (PrivateNetwork=yes). --deny-write-execute sets prctl(PR_SET_MDWE), which is how systemd
implements MemoryDenyWriteExecute=yes on Linux >= 6.3: no memory may become writable and
executable, across execve. Drop capabilities after this with setpriv(1) as part of COMMAND.

Bind remounts (`remount,bind,ro`) change the mount point in this namespace only, never the file
system itself. Standard library only, so it runs by path before any project import.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
import sys

API_FILE_SYSTEMS = ("/proc", "/sys", "/dev")  # left as they are, as ProtectSystem=strict does
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1  # <linux/prctl.h>


def mount_points() -> list[tuple[str, bool]]:
    """(mount point, read-only) for every mount in this namespace, from /proc/self/mountinfo."""
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as info:
        for line in info:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")  # "\040" and friends
            found.append((point, "ro" in fields[5].split(",")))
    return found


def under(path: str, roots: tuple[str, ...] | list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


def make_read_only(writable: list[str]) -> None:
    """Bind the writable folders onto themselves, then every other mount read-only."""
    for folder in writable:
        mount("--bind", folder, folder)
    for point, read_only in mount_points():
        if read_only or point in writable or under(point, API_FILE_SYSTEMS):
            continue
        mount("-o", "remount,bind,ro", point)


def deny_write_execute() -> None:
    """MemoryDenyWriteExecute=yes; raises OSError where the kernel lacks PR_SET_MDWE (< 6.3)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"prctl(PR_SET_MDWE): {os.strerror(error)}")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rw", action="append", default=[], help="a folder that stays writable (repeatable)")
    parser.add_argument("--deny-write-execute", action="store_true", help="MemoryDenyWriteExecute=yes (prctl)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("expected -- COMMAND...")
    make_read_only([os.path.realpath(p) for p in args.rw])
    if args.deny_write_execute:
        deny_write_execute()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
