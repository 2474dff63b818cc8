"""The README and the docs/ pages say only what ships.

Every ``regmix ...`` command in the code blocks of README.md and docs/*.md names a real subcommand, only flags
that subcommand has (read from its own ``--help``, i.e. the jsonargparse parser the CLI builds) and shipped
recipes that exist; every relative link points to a file that exists, and to a heading of it where it names
one. Nothing is run: a copied command must fail, if at all, only because the reader's corpus is not there.

    .venv/bin/pytest -q -p no:xdist tests/test_readme_commands.py
"""

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


PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMANDS = [(f"{page.relative_to(ROOT)}:{n}", argv) for page in PAGES for n, argv in readme_commands(page.read_text())]


def test_the_readme_and_the_docs_have_the_commands_this_test_reads():
    # the README keeps the loop on a real corpus; the pages hold the rest (RegMix-D, the laws, the Pile)
    readme = {argv[0] for where, argv in COMMANDS if where.startswith("README.md:")}
    assert {"prepare", "sample", "sweep", "fit", "optimize", "recipe"} <= readme
    pages = {where.partition(":")[0] for where, _ in COMMANDS}
    assert {"docs/pile.md", "docs/regmix_d.md", "docs/laws.md", "docs/gpu.md"} <= pages
    every = "prepare sample sweep evaluate fit predict optimize fit_trajectory schedule entropy recipe inspect"
    assert set(every.split()) <= {argv[0] for _, argv in COMMANDS}
    assert len(COMMANDS) >= 30


@pytest.mark.parametrize("line,argv", COMMANDS, ids=[where for where, _ in COMMANDS])
def test_readme_command_names_a_real_subcommand_real_flags_and_real_recipes(line, argv):
    """``line`` is where the command is, ``PAGE:LINE``."""
    sub, *rest = argv
    rest = [a for a in rest if a != "..."]  # `regmix sweep ... --fused_loss off`: the rest as before
    assert sub in _commands(), f"{line}: `regmix {sub}` is no subcommand"
    known = flags_of(sub) | GLOBAL
    unknown = [a.split("=")[0] for a in rest if a.startswith("--") and a.split("=")[0] not in known]
    assert not unknown, f"{line}: `regmix {sub}` has no flag(s) {unknown}"
    if rest and not rest[0].startswith("-"):
        assert sub in _POSITIONAL, f"{line}: `regmix {sub}` takes no positional argument {rest[0]!r}"
    for flag, value in pairwise(rest):
        # a recipe is shipped (in a fresh clone it is the only kind there is); so is any recipes/ path
        if flag in RECIPE_FLAGS or value.startswith("recipes/"):
            assert (ROOT / value).is_file(), f"{line}: {flag} {value}: no such shipped recipe"


def test_the_checker_finds_a_bad_flag_and_a_bad_recipe():
    cmds = readme_commands("```bash\nregmix sweep --recipe proxy.yaml \\\n  --no_such_flag 1  # x\n```\n")
    assert cmds == [(2, ["sweep", "--recipe", "proxy.yaml", "--no_such_flag", "1"])]
    with pytest.raises(AssertionError, match=r"no flag\(s\) \['--no_such_flag'\]"):
        test_readme_command_names_a_real_subcommand_real_flags_and_real_recipes("README.md:2", cmds[0][1])
    with pytest.raises(AssertionError, match="--recipe proxy.yaml: no such shipped recipe"):
        test_readme_command_names_a_real_subcommand_real_flags_and_real_recipes("README.md:2", cmds[0][1][:3])
    assert "--no_such_flag" not in flags_of("sweep") and "--eval.points" in flags_of("sweep")


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)[^)]*\)")  # [text](target "title") and ![alt](image)


def _prose_lines(text: str):
    """``(line number, line)`` outside fenced code blocks: where Markdown renders headings and links."""
    block = False
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            block = not block
        elif not block:
            yield n, line


def _links(line: str) -> list[str]:
    """The targets of the links on one line of prose; inline code (`[x](y)` shown as code) holds none."""
    return LINK.findall(re.sub(r"`[^`]*`", "", line))


def anchors(text: str) -> set[str]:
    """The ``#anchor`` of every heading, as GitHub makes them: lower case, punctuation dropped, spaces to '-',
    a repeated heading numbered ``-1``, ``-2``, ..."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in _prose_lines(text):
        if m := re.match(r"#{1,6} (.+)", line):
            slug = re.sub(r"[^\w\- ]", "", m[1].strip().lower()).replace(" ", "-")
            out.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
            seen[slug] = seen.get(slug, 0) + 1
    return out


def broken_links(page: Path) -> list[str]:
    """``LINE: target (why)`` for every relative link of ``page`` to a missing file or a missing heading."""
    out = []
    for n, line in _prose_lines(page.read_text()):
        for target in _links(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not ours to check offline
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                out.append(f"{n}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
                out.append(f"{n}: {target} (no heading #{anchor} in {dest.name})")
    return out


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_points_to_a_file_and_heading_that_exist(page):
    assert not broken_links(page), f"{page.relative_to(ROOT)}: broken links {broken_links(page)}"


def test_the_readme_links_every_docs_page():
    linked = {
        (ROOT / t.partition("#")[0]).resolve()
        for _, line in _prose_lines((ROOT / "README.md").read_text())
        for t in _links(line)
    }
    assert set(PAGES[1:]) <= linked, [p.name for p in PAGES[1:] if p not in linked]


def test_the_link_checker_finds_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## A `code` heading, with punctuation!\n\n## Twice\n## Twice\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md) [ok](other.md#a-code-heading-with-punctuation) [ok](other.md#twice-1) [ok](#top)\n"
        "[web](https://example.org/x.md) `[code](missing.md)`\n```\n[block](missing.md)\n```\n# Top\n"
        "[gone](missing.md) ![img](missing.png) [bad](other.md#no-such-heading) [bad](other.md#twice-2)\n"
    )
    assert broken_links(page) == [
        "7: missing.md (no such file)",
        "7: missing.png (no such file)",
        "7: other.md#no-such-heading (no heading #no-such-heading in other.md)",
        "7: other.md#twice-2 (no heading #twice-2 in other.md)",
    ]
