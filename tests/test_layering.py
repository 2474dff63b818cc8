"""The package's shape, by the data flow, and its import rules.

    regmix_plugin/
      __main__.py   the `regmix` CLI                      (imports anything below)
      demo/         `regmix demo`, an app over the stages (imports commands and below)
      commands/     one module per `regmix` subcommand, in the pipeline's order; never import each other
      pretrain/     what runs inside the stock `litgpt pretrain`: MixtureData, the stream, the controller
      models/       regressors, mixing laws, the trajectory model and its searches, token entropy
      formats/      one module per artefact (manifest, tables, model directories, YAML), its reader and writer
      *.py          small shared helpers (atomic writes, errors, weights, counts, LitGPT internals, ...)

A module may import its own layer or a lower one: commands > pretrain > models > formats/helpers. Parsed with
``ast`` (every import, including those inside functions), so a lazy import cannot hide a dependency.
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
LAYERS = ("helpers", "formats", "models", "pretrain", "commands", "demo", "entry")
# formats and helpers are one layer: formats use atomic writes and weight validation, helpers read the manifest
RANK = {"helpers": 0, "formats": 0, "models": 1, "pretrain": 2, "commands": 3, "demo": 4, "entry": 5}


# A model directory's format reads back model objects: it sits with the models it holds.
MODEL_FORMATS = {"regmix_plugin.formats.model_dir", "regmix_plugin.formats.trajectory_model"}


def _layer(module: str) -> str:
    if module == "regmix_plugin.__main__":
        return "entry"
    if module in MODEL_FORMATS:
        return "models"
    parts = module.split(".")
    if len(parts) > 2 and parts[1] in ("commands", "pretrain", "models", "formats", "demo"):
        return parts[1]
    if module in (
        "regmix_plugin.commands",
        "regmix_plugin.pretrain",
        "regmix_plugin.models",
        "regmix_plugin.formats",
        "regmix_plugin.demo",
    ):
        return module.split(".")[1]
    return "helpers"


def _owner(module: str) -> str:
    """The command a module belongs to: ``...commands.sweep.plan`` belongs to ``...commands.sweep``."""
    for command in COMMANDS:
        if module == command or module.startswith(command + "."):
            return command
    return ""


def test_the_command_table_is_what_this_test_thinks():
    # every subcommand lives in commands/ (the demo is the one app)
    assert all(_layer(c) == "commands" for c in COMMANDS), sorted(COMMANDS)
    assert {
        f"regmix_plugin.commands.{n}"
        for n in (
            "prepare",
            "sample",
            "sweep",
            "evaluate",
            "fit",
            "optimize",
            "fit_trajectory",
            "schedule",
            "entropy",
            "recipe",
            "inspect_run",
        )
    } <= COMMANDS


@pytest.mark.parametrize("module", sorted(n for n in MODULES if n != "regmix_plugin"))
def test_a_module_imports_only_its_own_layer_or_a_lower_one(module):
    mine = RANK[_layer(module)]
    bad = sorted(m for m in GRAPH[module] if RANK[_layer(m)] > mine)
    assert not bad, f"{module} ({_layer(module)}) imports higher layers: {bad}"


@pytest.mark.parametrize("module", sorted(n for n in MODULES if _owner(n)))
def test_no_command_imports_another_command(module):
    mine = _owner(module)
    bad = {m for m in GRAPH[module] if _owner(m) and _owner(m) != mine}
    assert not bad, f"{module} (part of command {mine}) imports {sorted(bad)}"


def test_no_module_is_over_500_lines():
    long = {n: len(p.read_text().splitlines()) for n, p in MODULES.items()}
    assert not {n: k for n, k in long.items() if k > 500}


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
    MODULES["regmix_plugin.commands._probe"] = tmp_path / "probe.py"
    (tmp_path / "probe.py").write_text(
        "def f():\n    from regmix_plugin.commands.fit import fit\n    from . import sample\n"
    )
    try:
        got = _imports("regmix_plugin.commands._probe")
    finally:
        del MODULES["regmix_plugin.commands._probe"]
    assert got == {"regmix_plugin.commands", "regmix_plugin.commands.fit", "regmix_plugin.commands.sample"}
