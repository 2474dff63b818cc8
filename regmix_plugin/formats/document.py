"""Reading one JSON or YAML artefact: the missing-file and bad-syntax errors every format gives alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_document(path: Path, missing: str, rerun: str) -> Any:
    """Parse ``path`` (JSON, or YAML for ``.yaml``/``.yml``), without running any code from it.

    ``missing`` is the whole message when the file does not exist (it names the flag and how to write the
    file); ``rerun`` says how to write it again when it does not parse.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(missing)
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"{path} is not valid YAML ({e}); {rerun}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); {rerun}") from None
