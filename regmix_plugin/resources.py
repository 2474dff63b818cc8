"""The recipes shipped with regmix-plugin, found the same way in a wheel install and in a clone.

The repository's top-level ``recipes/`` is installed as the package ``regmix_plugin.recipes`` (``package-dir``
in pyproject.toml; an editable install maps it to the clone's folder), so ``regmix demo`` and ``regmix sweep``'s
default recipe work after a plain ``pip install regmix-plugin``::

    python -c "from regmix_plugin.resources import recipe_path; print(recipe_path('tiny_cpu'))"
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def recipes_dir() -> Path:
    """The folder holding the shipped recipes (``tiny_cpu.yaml``, ``demo/``, ``pile/``)."""
    return Path(str(files("regmix_plugin.recipes")))


def available_recipes() -> list[str]:
    """Names of the shipped recipes relative to the recipes folder, e.g. ``demo/proxy.yaml``."""
    root = recipes_dir()
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.yaml"))


def recipe_path(name: str) -> Path:
    """The shipped recipe called ``name`` (``"tiny_cpu"``, ``"demo/proxy.yaml"``; ``recipes/`` and ``.yaml``
    may be given or left out); a name that is not shipped raises, listing the ones that are."""
    rel = Path(name).as_posix().removeprefix("recipes/")
    rel = rel if rel.endswith(".yaml") else rel + ".yaml"
    known = available_recipes()
    if rel not in known:
        raise FileNotFoundError(f"no shipped recipe {name!r}; the shipped ones are: {', '.join(known)}")
    return recipes_dir() / rel


def resolve_recipe(path: Path | str, flag: str) -> Path:
    """``path`` if it is a file; else, for ``recipes/NAME.yaml``, the shipped recipe of that name.

    So ``--recipe recipes/tiny_cpu.yaml`` (the README's spelling and ``regmix sweep``'s default) works
    from any directory after a pip install, while a file of that name in the working directory wins.
    ``flag`` names the option in the error, which lists the shipped recipes.
    """
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_absolute() and path.parts[:1] == ("recipes",):
        rel = Path(*path.parts[1:]).as_posix()
        if rel in available_recipes():
            return recipes_dir() / rel
    raise FileNotFoundError(
        f"{flag} {str(path)!r} does not exist; pass a recipe YAML or one of the shipped ones: "
        + ", ".join(f"recipes/{r}" for r in available_recipes())
    )
