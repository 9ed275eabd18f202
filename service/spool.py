"""The spool folder: where a process stages uploads, job inputs and results being built.

Without VSOD_SPOOL_DIR each process makes `vsod-spool-*` in the temp directory and removes it at
shutdown. A SIGKILLed process cannot, so each spool holds an `owner` file (the pid and the
process's start time, which tells a reused pid apart), and `open_spool` removes the spools of
processes that are gone. A spool without an owner file (being made, or from an older version) and
one whose owner lives are left alone.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger("vsod.spool")
PREFIX = "vsod-spool-"
OWNER = "owner"


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat); None when it is
    gone. Where /proc is missing, a live pid (os.kill 0) counts as the owner ("?")."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]  # after the command name, which may hold spaces
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
    except (OSError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return "?"


def _owner_alive(spool: Path) -> bool | None:
    """Whether the spool's owning process still runs; None when the spool names no owner."""
    try:
        pid_text, start = (spool / OWNER).read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    now = process_start(pid)
    return now is not None and (now == start or "?" in (now, start))


def reap_stale_spools(parent: Path | None = None) -> list[Path]:
    """Remove the `vsod-spool-*` folders in `parent` (the temp directory) whose owner process is gone."""
    parent = Path(parent or tempfile.gettempdir())
    removed = []
    for spool in parent.glob(f"{PREFIX}*"):
        if spool.is_dir() and not spool.is_symlink() and _owner_alive(spool) is False:
            shutil.rmtree(spool, ignore_errors=True)
            removed.append(spool)
    if removed:
        log.info("removed %d spool folder(s) left by processes that are gone", len(removed))
    return removed


def open_spool(configured: Path | None) -> Path:
    """The configured spool folder, or a new one in the temp directory (after reaping stale ones)."""
    if configured is not None:
        configured.mkdir(parents=True, exist_ok=True)
        return configured
    reap_stale_spools()
    spool = Path(tempfile.mkdtemp(prefix=PREFIX))
    (spool / OWNER).write_text(f"{os.getpid()} {process_start(os.getpid()) or '?'}\n")
    return spool
