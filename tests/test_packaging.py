"""What ``pip install`` gets: the wheel carries every module and every recipe, the recipes are found from
any directory, and the README's install line keeps the user's torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from regmix_plugin.resources import available_recipes, recipe_path, recipes_dir, resolve_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p.relative_to(ROOT / "recipes").as_posix() for p in (ROOT / "recipes").rglob("*.yaml"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Build from a copy: setuptools' in-tree build/ keeps files of earlier builds and would hide a
    # module or recipe the packaging config leaves out.
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copy(ROOT / "README.md", src)
    for d in ("regmix_plugin", "recipes"):
        shutil.copytree(ROOT / d, src / d, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (whl,) = tmp.glob("regmix_plugin-*.whl")
    return whl


def test_wheel_ships_every_recipe(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert len(RECIPES) >= 8
    assert sorted(n.removeprefix("regmix_plugin/recipes/") for n in names if n.endswith(".yaml")) == RECIPES


def test_wheel_ships_every_module(wheel):
    # pyproject.toml lists the packages by hand (to map recipes/ into the package); a new subpackage
    # missing from that list would be left out of the wheel without a word.
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py")}
    in_tree = {p.relative_to(ROOT).as_posix() for p in (ROOT / "regmix_plugin").rglob("*.py")}
    assert in_tree - shipped == set()


def test_recipes_are_found_in_a_clone():
    assert recipes_dir() == ROOT / "recipes"
    assert available_recipes() == RECIPES
    assert recipe_path("tiny_cpu") == ROOT / "recipes" / "tiny_cpu.yaml"
    assert recipe_path("recipes/demo/proxy.yaml") == ROOT / "recipes" / "demo" / "proxy.yaml"


def test_unknown_recipe_lists_the_shipped_ones():
    with pytest.raises(FileNotFoundError) as e:
        recipe_path("tiny_gpu")
    assert str(e.value) == f"no shipped recipe 'tiny_gpu'; the shipped ones are: {', '.join(RECIPES)}"


def test_resolve_recipe_prefers_a_local_file_then_the_shipped_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_recipe("recipes/tiny_cpu.yaml", "--recipe") == ROOT / "recipes" / "tiny_cpu.yaml"
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "tiny_cpu.yaml").write_text("mine: true\n")
    assert resolve_recipe("recipes/tiny_cpu.yaml", "--recipe") == Path("recipes/tiny_cpu.yaml")
    with pytest.raises(FileNotFoundError) as e:
        resolve_recipe("recipes/tiny.yaml", "--recipe")
    assert str(e.value) == (
        "--recipe 'recipes/tiny.yaml' does not exist; pass a recipe YAML or one of the shipped "
        "ones: " + ", ".join(f"recipes/{r}" for r in RECIPES)
    )


def _run(*cmd, **kw) -> subprocess.CompletedProcess:
    # Without PYTHONPATH: the venv must import the installed wheel, not a checkout the tests run from.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True, env=env, **kw)


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("REGMIX_TEST_INSTALL") != "1",
    reason="installs torch and ~75 packages into a fresh venv (~4 min); run with REGMIX_TEST_INSTALL=1",
)
def test_readme_install_line_keeps_the_users_torch(wheel, tmp_path):
    import torch

    users_torch = torch.__version__
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    pip, python = venv / "bin" / "pip", venv / "bin" / "python"
    _run(pip, "install", "-q", f"torch=={users_torch}", timeout=900)
    # A plain install would replace it: litdata needs torchvision, whose newest release pins a newer torch.
    _run(pip, "install", "--dry-run", "-q", "--report", tmp_path / "plain.json", wheel, timeout=900)
    report = json.loads((tmp_path / "plain.json").read_text())
    plain = {i["metadata"]["name"]: i["metadata"]["version"] for i in report["install"]}
    assert plain.get("torch", users_torch) != users_torch
    # The README's line: name the installed torch, so pip picks the torchvision built for it.
    _run(pip, "install", "-q", wheel, f"torch=={users_torch}", timeout=900)
    if torch.version.cuda is None:  # the README's second line, for CPU torch
        _run(pip, "uninstall", "-y", "-q", "torchvision")
    probe = (
        "import torch, torchmetrics, litgpt, litdata; from regmix_plugin.resources import recipe_path; "
        "print(torch.__version__); print(recipe_path('demo/proxy'))"
    )
    out = _run(python, "-c", probe, cwd=tmp_path).stdout.splitlines()
    assert out[0] == users_torch
    assert Path(out[1]).is_relative_to(venv) and Path(out[1]).name == "proxy.yaml"
    assert _run(venv / "bin" / "regmix", "--version", cwd=tmp_path).stdout.startswith("regmix ")
    # the whole loop from the installed package alone, run from a directory that is not a clone (issue 8)
    away = tmp_path / "elsewhere"
    away.mkdir()
    demo = _run(venv / "bin" / "regmix", "demo", "--quick", "true", "--out_dir", away / "demo", cwd=away, timeout=1200)
    summary = json.loads((away / "demo" / "summary.json").read_text())
    assert summary["n_proxies"] == 12 and summary["arms"], demo.stdout[-2000:]
