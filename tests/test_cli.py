"""The ``regmix`` command line as a user meets it: one-line errors for mistakes, tracebacks for bugs,
``--version``, and readable ``--help``. Error paths run the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import regmix_plugin
from regmix_plugin.__main__ import _commands, is_user_error, main
from regmix_plugin.errors import RegmixError


def regmix(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "REGMIX_DEBUG"}
    return subprocess.run(
        [sys.executable, "-m", "regmix_plugin", *args],
        capture_output=True,
        text=True,
        env={**environ, **(env or {})},
        timeout=120,
    )


def test_user_error_is_one_line_and_exit_2(tmp_path):
    missing = tmp_path / "nonexistent"
    p = regmix("inspect", str(missing))
    assert p.returncode == 2
    assert p.stdout == ""
    assert p.stderr.splitlines() == [
        f"regmix inspect: error: CHECKPOINT_DIR {str(missing)!r} has no lit_model.pth; pass a directory like "
        "out/pretrain/final or out/pretrain/step-00001000"
    ]


@pytest.mark.parametrize("how", ["env", "flag"])
def test_debug_shows_the_traceback(tmp_path, how):
    missing = str(tmp_path / "nonexistent")
    p = regmix("inspect", missing, env={"REGMIX_DEBUG": "1"}) if how == "env" else regmix("--debug", "inspect", missing)
    assert p.returncode == 1
    lines = p.stderr.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[-1].startswith(f"FileNotFoundError: CHECKPOINT_DIR {missing!r} has no lit_model.pth")
    assert "regmix inspect: error:" not in p.stderr


def test_internal_error_keeps_its_traceback(tmp_path):
    # Not a checkpoint torch can read: torch.load's own RuntimeError is not a message written for users.
    (tmp_path / "lit_model.pth").write_bytes(b"not a checkpoint")
    p = regmix("inspect", str(tmp_path))
    assert p.returncode == 1
    lines = p.stderr.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[-1].startswith("RuntimeError:")
    assert "error:" not in lines[0]


def test_bad_flag_still_exits_2_from_jsonargparse():
    p = regmix("inspect", "--no_such_flag", "1")
    assert p.returncode == 2
    assert "Unrecognized arguments: --no_such_flag 1" in p.stderr
    assert "Traceback" not in p.stderr


def test_user_error_means_raised_by_regmix_code(tmp_path):
    from regmix_plugin.commands.inspect_run import read_data_state

    def raised(fn, *args):
        try:
            fn(*args)
        except Exception as e:
            return e
        raise AssertionError("did not raise")

    assert is_user_error(raised(read_data_state, tmp_path / "missing"))  # FileNotFoundError from regmix code
    assert not is_user_error(raised(json.loads, "{"))  # a ValueError from inside a library is a bug
    assert not is_user_error(raised(dict().__getitem__, "k"))  # KeyError: never a user message
    assert is_user_error(RegmixError("raised anywhere, with no traceback yet"))
    assert not is_user_error(ValueError("no traceback: cannot tell who raised it"))


def test_version():
    p = regmix("--version")
    assert p.returncode == 0
    assert p.stdout == f"regmix {regmix_plugin.__version__}\n"


@pytest.mark.parametrize("sub", sorted(_commands()))
def test_help_names_types_plainly(sub, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([sub, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "<class" not in out
    assert "type: Path" in out  # every subcommand takes at least one path
