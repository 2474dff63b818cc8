"""Every ``regmix ...`` command in README.md's code blocks names a real subcommand, only flags that subcommand
has (read from its own ``--help``, i.e. the jsonargparse parser the CLI builds) and shipped recipes that exist.
Nothing is run: a copied command must fail, if at all, only because the reader's corpus is not there."""

from __future__ import annotations

import re
import shlex
from functools import cache
from itertools import pairwise
from pathlib import Path

import pytest

from regmix_plugin.__main__ import _POSITIONAL, _commands, main

ROOT = Path(__file__).resolve().parents[1]
GLOBAL = {"--debug", "--help", "--version", "--config", "--print_config"}
RECIPE_FLAGS = {"--recipe", "--template"}


def readme_commands(text: str) -> list[tuple[int, list[str]]]:
    """``(line number, argv after "regmix")`` of every ``regmix`` command in the fenced code blocks."""
    out, block, pending, start = [], False, "", 0
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            block, pending = not block, ""
            continue
        if not block or (not pending and not line.lstrip().startswith("regmix ")):
            continue
        if not pending:
            start = n
        pending += line.rstrip().removesuffix("\\") + " "
        if line.rstrip().endswith("\\"):
            continue
        argv = shlex.split(pending, comments=True)
        pending = ""
        if argv[:1] == ["regmix"]:
            out.append((start, argv[1:]))
    return out


@cache
def flags_of(sub: str) -> frozenset[str]:
    """The flags ``regmix SUB --help`` lists."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
        main([sub, "--help"])
    return frozenset(re.findall(r"^\s+(?:-\w, )?(--[\w.]+)", buf.getvalue(), re.M))  # the option lines only


COMMANDS = readme_commands((ROOT / "README.md").read_text())


def test_the_readme_has_the_commands_this_test_reads():
    subs = {argv[0] for _, argv in COMMANDS}
    # the RegMix-D and mixing-law sections' commands at least
    assert {"sample", "sweep", "fit_trajectory", "schedule", "recipe", "fit", "optimize", "entropy"} <= subs
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize("line,argv", COMMANDS, ids=[f"README.md:{n}" for n, _ in COMMANDS])
def test_readme_command_names_a_real_subcommand_real_flags_and_real_recipes(line, argv):
    sub, *rest = argv
    rest = [a for a in rest if a != "..."]  # `regmix sweep ... --fused_loss off`: the rest as before
    assert sub in _commands(), f"README.md:{line}: `regmix {sub}` is no subcommand"
    known = flags_of(sub) | GLOBAL
    unknown = [a.split("=")[0] for a in rest if a.startswith("--") and a.split("=")[0] not in known]
    assert not unknown, f"README.md:{line}: `regmix {sub}` has no flag(s) {unknown}"
    if rest and not rest[0].startswith("-"):
        assert sub in _POSITIONAL, f"README.md:{line}: `regmix {sub}` takes no positional argument {rest[0]!r}"
    for flag, value in pairwise(rest):
        # a recipe is shipped (in a fresh clone it is the only kind there is); so is any recipes/ path
        if flag in RECIPE_FLAGS or value.startswith("recipes/"):
            assert (ROOT / value).is_file(), f"README.md:{line}: {flag} {value}: no such shipped recipe"


def test_the_checker_finds_a_bad_flag_and_a_bad_recipe():
    cmds = readme_commands("```bash\nregmix sweep --recipe proxy.yaml \\\n  --no_such_flag 1  # x\n```\n")
    assert cmds == [(2, ["sweep", "--recipe", "proxy.yaml", "--no_such_flag", "1"])]
    with pytest.raises(AssertionError, match=r"no flag\(s\) \['--no_such_flag'\]"):
        test_readme_command_names_a_real_subcommand_real_flags_and_real_recipes(*cmds[0])
    with pytest.raises(AssertionError, match="--recipe proxy.yaml: no such shipped recipe"):
        test_readme_command_names_a_real_subcommand_real_flags_and_real_recipes(2, cmds[0][1][:3])
    assert "--no_such_flag" not in flags_of("sweep") and "--eval.points" in flags_of("sweep")
