"""Files that ship inside the package: the recipes the CLI and the demo start from.

The repository's top-level ``recipes/`` folder is installed as the package ``regmix_plugin.recipes``
(``package-dir`` in pyproject.toml), so a plain ``pip install`` has them too.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def recipe_path(name: str) -> Path:
    """The installed copy of a shipped recipe, e.g. ``recipe_path("demo/proxy.yaml")``."""
    root = Path(str(files("regmix_plugin.recipes")))
    path = root / name
    if not path.is_file():
        shipped = sorted(str(p.relative_to(root)) for p in root.rglob("*.yaml"))
        raise FileNotFoundError(f"no shipped recipe {name!r}; shipped: {', '.join(shipped)}")
    return path
