"""The package's import structure: formats below commands, commands independent of each other, no cycles.

Parsed with ``ast`` (every import, including those inside functions), so a lazy import cannot hide a
dependency. Commands are the modules behind the ``regmix`` subcommands (read from the CLI's table); the
demo is an application over them and may import them, but no command may import it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "regmix_plugin"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _imports(name: str) -> set[str]:
    """The package modules ``name`` imports (``from regmix_plugin.x import y`` counts x, and x.y if a module)."""
    tree = ast.parse(MODULES[name].read_text())
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in MODULES and t not in (name, "regmix_plugin")}
    return out


GRAPH = {name: _imports(name) for name in MODULES}


def _command_modules() -> set[str]:
    """The modules that define the ``regmix`` subcommands, from the CLI's own table."""
    from regmix_plugin.__main__ import _commands

    return {function.__module__ for function in _commands().values()} - {"regmix_plugin.demo"}


COMMANDS = _command_modules()
APPS = {n for n in MODULES if n == "regmix_plugin.demo" or n.startswith("regmix_plugin.demo.")}
ENTRY = {"regmix_plugin.__main__"}


def _owner(module: str) -> str:
    """The command a module belongs to: ``regmix_plugin.sweep.plan`` belongs to ``regmix_plugin.sweep``."""
    for command in COMMANDS:
        if module == command or module.startswith(command + "."):
            return command
    return ""


def test_the_command_table_is_what_this_test_thinks():
    assert {
        "regmix_plugin.prepare",
        "regmix_plugin.sweep",
        "regmix_plugin.fit",
        "regmix_plugin.optimize",
        "regmix_plugin.recipe",
        "regmix_plugin.sample",
        "regmix_plugin.evaluate",
    } <= COMMANDS


@pytest.mark.parametrize("module", sorted(n for n in MODULES if n.startswith("regmix_plugin.formats")))
def test_formats_import_no_command_and_no_app(module):
    bad = {m for m in GRAPH[module] if _owner(m) or m in APPS or m in ENTRY}
    assert not bad, f"{module} imports {sorted(bad)}"


@pytest.mark.parametrize("module", sorted(n for n in MODULES if _owner(n)))
def test_no_command_imports_another_command_or_the_demo(module):
    mine = _owner(module)
    bad = {m for m in GRAPH[module] if (_owner(m) and _owner(m) != mine) or m in APPS or m in ENTRY}
    assert not bad, f"{module} (part of command {mine}) imports {sorted(bad)}"


def test_shared_modules_import_no_command():
    shared = [n for n in MODULES if not _owner(n) and n not in APPS and n not in ENTRY]
    bad = {n: sorted(m for m in GRAPH[n] if _owner(m) or m in APPS or m in ENTRY) for n in shared}
    assert not {n: v for n, v in bad.items() if v}


def test_there_is_no_import_cycle():
    # the package's __init__ imports nothing eagerly; edges into a package's __init__ from its own modules
    # are part of Python's import of that package, not a design dependency, so they are left out
    graph = {n: {m for m in deps if not n.startswith(m + ".")} for n, deps in GRAPH.items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        path.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(m) :] + [m]))
            if m not in state:
                visit(m)
        path.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


def test_the_checker_sees_a_violation(tmp_path):
    # the parser is what every test above relies on: it must find a lazy import inside a function
    MODULES["regmix_plugin._probe"] = tmp_path / "probe.py"
    (tmp_path / "probe.py").write_text("def f():\n    from regmix_plugin.fit import fit\n    from . import sample\n")
    try:
        got = _imports("regmix_plugin._probe")
    finally:
        del MODULES["regmix_plugin._probe"]
    assert got == {"regmix_plugin.fit", "regmix_plugin.sample"}
