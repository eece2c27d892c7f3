"""Process and HTTP helpers for the local services (`cli/services.py`): liveness by pid and
command line, log tails, small HTTP calls, port probes, process-group memory and shutdown.
Linux-first (/proc), with safe fallbacks elsewhere."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.request
from pathlib import Path


def alive(info: dict | None) -> bool:
    """The recorded process still runs and is still ours (not a recycled pid)."""
    if not info:
        return False
    try:
        os.kill(info["pid"], 0)
    except (ProcessLookupError, PermissionError):
        return False
    cmdline = Path(f"/proc/{info['pid']}/cmdline")
    if cmdline.exists():
        return info["marker"] in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return True


def tail(path: str | Path, n: int = 3) -> str:
    try:
        lines = [ln for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])[-400:]


def http(url: str, method: str = "GET", body: dict | None = None) -> bytes:
    """The body of a 2xx answer; raises OSError (URLError, HTTPError) otherwise."""
    req = urllib.request.Request(url, method=method, headers={"Content-Type": "application/json"},
                                 data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.read()


def http_ok(url: str) -> bool:
    try:
        return http(url) is not None
    except OSError:
        return False


def port_busy(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def group_rss_mb(pgid: int) -> float:
    """Resident memory of a process group (Linux /proc; 0 elsewhere)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # pgrp is field 5 of stat, 3rd after the name
                total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    return total / 2**20


def stop_group(pgid: int, grace: float) -> None:
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        t0 = time.time()
        while time.time() - t0 < wait:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            try:  # our own child (tests, a failed `up`) would linger as a zombie
                os.waitpid(pgid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.2)
