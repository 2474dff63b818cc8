"""Run claims: how launchers that share one sweep directory split its runs instead of training them twice.

    <sweep>/claims/<run_id>.claim    {"run_id", "host", "pid", "launcher", "started"}; its mtime is the heartbeat

A worker claims a run before training it by creating the claim with ``O_CREAT | O_EXCL``, which exactly one
process can do, on one machine or on several sharing a filesystem. While the run trains, a heartbeat thread
touches the file; after the run's record is written the claim is removed. A claim is *stale*, and may be taken
over, when its heartbeat is older than the timeout or when it was made on this host by a process that no
longer exists (a worker killed mid-run). Taking over goes through a second ``O_EXCL`` file, so two launchers
that both see a stale claim cannot both win it.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from regmix_plugin.atomic import pid_alive

#: A claim whose heartbeat is older than this many seconds is stale (default of ``--claim_timeout``).
DEFAULT_TIMEOUT = 120.0
_BEATS_PER_TIMEOUT = 6


@dataclass(frozen=True)
class Claim:
    """Who is training a run."""

    run_id: str
    host: str
    pid: int
    launcher: str
    started: float

    def describe(self, now: float, heartbeat: float) -> str:
        return f"{self.host} pid {self.pid} (launcher {self.launcher}), heartbeat {now - heartbeat:.0f} s ago"


def claim_path(sweep_dir: Path, run_id: str) -> Path:
    return Path(sweep_dir) / "claims" / f"{run_id}.claim"


def _exclusive(path: Path, payload: str) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(payload)
    return True


def read_claim(sweep_dir: Path, run_id: str) -> tuple[Claim, float] | None:
    """The claim on ``run_id`` and its heartbeat time, or None if unclaimed (or the file vanished meanwhile)."""
    path = claim_path(sweep_dir, run_id)
    try:
        heartbeat = path.stat().st_mtime
        raw = json.loads(path.read_text())
        return Claim(**raw), heartbeat
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        # a claim being written right now reads as empty: treat it as fresh, never as stale
        return (Claim(run_id, "?", 0, "?", time.time()), time.time()) if path.exists() else None


def is_stale(claim: Claim, heartbeat: float, timeout: float, now: float | None = None) -> bool:
    """Whether a claim may be taken over: no heartbeat for ``timeout`` s, or its process on this host is gone."""
    now = time.time() if now is None else now
    if now - heartbeat > timeout:
        return True
    return claim.host == socket.gethostname() and claim.pid > 0 and not pid_alive(claim.pid)


def try_claim(sweep_dir: Path, run_id: str, launcher: str, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Claim ``run_id`` for this process; True if it is now ours, False if a live claim holds it."""
    path = claim_path(sweep_dir, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    claim = Claim(run_id, socket.gethostname(), os.getpid(), launcher, time.time())
    payload = json.dumps(asdict(claim))
    if _exclusive(path, payload):
        return True
    held = read_claim(sweep_dir, run_id)
    if held is not None and not is_stale(*held, timeout):
        return False
    lock = path.with_suffix(".takeover")
    if not _exclusive(lock, payload):
        try:  # a takeover lock left by a crash mid-takeover is itself stale after the timeout
            if time.time() - lock.stat().st_mtime > timeout:
                lock.unlink(missing_ok=True)
        except FileNotFoundError:
            pass
        return False
    try:
        held = read_claim(sweep_dir, run_id)  # re-check under the lock: someone may have taken it meanwhile
        if held is not None and not is_stale(*held, timeout):
            return False
        path.unlink(missing_ok=True)
        return _exclusive(path, payload)
    finally:
        lock.unlink(missing_ok=True)


def release(sweep_dir: Path, run_id: str) -> None:
    """Remove this process's claim on ``run_id`` (after its record is written)."""
    held = read_claim(sweep_dir, run_id)
    if held is not None and held[0].pid == os.getpid() and held[0].host == socket.gethostname():
        claim_path(sweep_dir, run_id).unlink(missing_ok=True)


@contextmanager
def heartbeat(sweep_dir: Path, run_id: str, timeout: float = DEFAULT_TIMEOUT):
    """Touch the claim every ``timeout / 6`` s while the body runs, so other launchers see it is alive."""
    path, stop = claim_path(sweep_dir, run_id), threading.Event()

    def beat() -> None:
        while not stop.wait(timeout / _BEATS_PER_TIMEOUT):
            try:
                os.utime(path)
            except FileNotFoundError:
                return

    thread = threading.Thread(target=beat, name=f"claim-heartbeat-{run_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def read_claims(sweep_dir: Path) -> dict[str, tuple[Claim, float]]:
    """Every current claim of a sweep, by run id (for ``--status``)."""
    held = {p.stem: read_claim(sweep_dir, p.stem) for p in sorted((Path(sweep_dir) / "claims").glob("*.claim"))}
    return {run_id: claim for run_id, claim in held.items() if claim is not None}
