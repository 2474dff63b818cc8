"""Write-then-rename: a writer killed mid-write leaves nothing that a later write of the same artefact keeps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from regmix_plugin.atomic import atomic_dir, atomic_path, remove_orphans, write_text

HANG = """
import sys, time
from regmix_plugin.atomic import atomic_dir, atomic_path
kind, path = sys.argv[1], sys.argv[2]
with (atomic_path(path) if kind == "file" else atomic_dir(path)) as tmp:
    if kind == "file":
        tmp.write_text("half")
    else:
        (tmp / "part").write_text("half")
    print(tmp, flush=True)
    time.sleep(600)
"""


def _killed_writer(kind: str, path) -> str:
    """A real process that dies (SIGKILL) inside an atomic write of ``path``; returns its temporary's name."""
    proc = subprocess.Popen([sys.executable, "-c", HANG, kind, str(path)], stdout=subprocess.PIPE, text=True)
    tmp = proc.stdout.readline().strip()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return tmp


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path, kind):
    target = tmp_path / "results.csv"
    left = _killed_writer(kind, target)
    assert os.path.exists(left) and not target.exists()  # the kill left a half-written temporary, no artefact
    if kind == "file":
        write_text(target, "whole")
        assert target.read_text() == "whole"
    else:
        with atomic_dir(target) as d:
            (d / "part").write_text("whole")
        assert (target / "part").read_text() == "whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


def test_a_live_writers_temporary_is_never_touched(tmp_path):
    target = tmp_path / "table.csv"
    with atomic_path(target) as mine:
        mine.write_text("in progress")
        assert remove_orphans(target) == []  # this process is alive: its temporary stays
        write_text(target, "other writer")  # another write of the same path meanwhile
        assert mine.read_text() == "in progress"
    assert target.read_text() == "in progress" and len(list(tmp_path.iterdir())) == 1


def test_a_kill_between_the_two_renames_of_a_directory_restores_the_old_copy(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as d:
        (d / "weights").write_text("v1")
    # the state atomic_dir leaves when killed after moving the old copy aside and before moving the new one in
    from regmix_plugin.atomic import _prefix

    old = tmp_path / f"{_prefix(target).replace(str(os.getpid()), str(_dead_pid()))}x.old"
    old.mkdir()
    target.rename(old / target.name)
    assert not target.exists()
    remove_orphans(target)
    assert (target / "weights").read_text() == "v1" and not old.exists()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    time.sleep(0.05)
    return proc.pid
