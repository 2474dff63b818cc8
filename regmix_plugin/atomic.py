"""Write-then-rename helpers: an artefact either exists whole or not at all."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path, suffix: str = ""):
    """Yield a temporary path next to ``path``; on success rename it over ``path``, on error delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(path)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(path), suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes the file private (0600); give it the permissions a plain open() would
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: str | Path):
    """Yield an empty temporary directory next to ``path``; on success it replaces ``path`` whole.

    An existing ``path`` is moved aside first and deleted only after the new one is in place, so a crash
    leaves either the old directory or the new one, never a mix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(path)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private (0700)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=_prefix(path), suffix=".old", dir=path.parent))
            path.rename(old / path.name)
        tmp.rename(path)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _host() -> str:
    return "".join(c if c.isalnum() or c == "-" else "_" for c in socket.gethostname()) or "host"


def _prefix(path: Path) -> str:
    """Temporaries are named ``.<name>.<host>.<pid>.<random>.tmp``: whose they are is in the name."""
    return f".{path.name}.{_host()}.{os.getpid()}."


def remove_orphans(path: str | Path) -> list[Path]:
    """Delete temporaries of ``path`` left by a writer that was killed (``kill -9``, OOM, power loss).

    A kill inside :func:`atomic_dir` between moving the old directory aside and moving the new one in leaves
    ``path`` missing: the old copy is put back first.

    Only writers on this host are judged (a pid means nothing on another node of a shared file system), and
    only dead ones: a live writer's temporary is never touched. Returns what was removed.
    """
    path = Path(path)
    head = f".{path.name}.{_host()}."
    removed = []
    try:
        siblings = list(path.parent.iterdir())
    except FileNotFoundError:
        return removed
    for p in siblings:
        if not (p.name.startswith(head) and p.name.endswith((".tmp", ".old"))):
            continue
        pid = p.name[len(head) :].split(".", 1)[0]
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        try:
            if p.name.endswith(".old") and not path.exists() and (p / path.name).exists():
                (p / path.name).rename(path)  # killed between moving the old copy aside and the new one in
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            removed.append(p)
        except FileNotFoundError:
            pass
    return removed


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (someone else's live process counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> None:
    """Atomically write ``text`` to ``path`` (fsync'd, so a crash right after cannot leave it empty)."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
