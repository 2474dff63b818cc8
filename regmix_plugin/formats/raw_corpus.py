"""Reading a raw corpus: the files ``regmix prepare`` accepts, how they name domains, and their documents.

Formats: ``.txt`` (one document per file), ``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst`` and ``.parquet``.
Layouts: one sub-directory per domain (``dirs``), ``<domain>-<shard>.<ext>`` files (``files``, the official
RegMix layout) or a per-document field (``field``, e.g. ``meta.pile_set_name``).

Used by ``prepare`` and by :func:`read_texts`, which feeds a throwaway tokenizer from the same sources::

    python -c "from regmix_plugin.formats.raw_corpus import read_texts; \\
        from regmix_plugin.tokenizer import train_tokenizer; \\
        train_tokenizer(read_texts('raw'), 'data/tok', vocab_size=512)"
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zlib
from collections.abc import Iterator
from pathlib import Path

from regmix_plugin.errors import RegmixError

EXTENSIONS = (".txt", ".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet")
_SHARD = re.compile(r"^(?P<domain>.+)-(?P<shard>[^-]+)$")


def extension(path: Path) -> str | None:
    """The supported extension ``path`` ends with (longest match), or None."""
    name = path.name.lower()
    return next((e for e in sorted(EXTENSIONS, key=len, reverse=True) if name.endswith(e)), None)


def field(obj: dict, dotted: str):
    """The value at a dotted path (``meta.pile_set_name``), or None when any part is missing."""
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def _dotted_keys(obj, prefix: str = "", depth: int = 3) -> list[str]:
    out = []
    for k, v in obj.items():
        out.append(prefix + str(k))
        if isinstance(v, dict) and depth > 1:
            out += _dotted_keys(v, f"{prefix}{k}.", depth - 1)
    return out


def first_document_keys(path: Path) -> list[str]:
    """The (dotted) keys of the first document of a JSONL/Parquet file: what a user can pass as a field."""
    ext = extension(path)
    if ext == ".parquet":
        import pyarrow.parquet as pq

        rows = next(pq.ParquetFile(path).iter_batches(batch_size=1), None)
        return _dotted_keys(rows.to_pylist()[0]) if rows is not None and rows.num_rows else []
    if ext in (None, ".txt"):
        return []
    with _open_text(path, ext) as stream:
        for line in stream:
            if line.strip():
                obj = json.loads(line)
                return _dotted_keys(obj) if isinstance(obj, dict) else []
    return []


def iter_documents(path: Path, text_key: str, domain_field: str | None) -> Iterator[tuple[str | None, str]]:
    """Yield ``(raw domain or None, text)`` for every document of one file.

    The domain is None when ``domain_field`` is not given or the document lacks it. A truncated or corrupt
    file raises an error naming it, not the decompressor's bare message.
    """
    try:
        yield from _documents(path, text_key, domain_field)
    except (EOFError, OSError, zlib.error, UnicodeDecodeError) as e:
        raise RegmixError(
            f"{path} is truncated or corrupt ({type(e).__name__}: {e}); re-download or re-create "
            "it, or move it out of --source"
        ) from None
    except Exception as e:
        if type(e).__module__.startswith(("zstd", "pyarrow")):  # ZstdError, ArrowInvalid: a damaged file
            raise RegmixError(
                f"{path} is truncated or corrupt ({type(e).__name__}: {e}); re-download or "
                "re-create it, or move it out of --source"
            ) from None
        raise


def _documents(path: Path, text_key: str, domain_field: str | None) -> Iterator[tuple[str | None, str]]:
    ext = extension(path)
    if ext == ".txt":
        yield None, path.read_text(encoding="utf-8", errors="replace")
        return
    if ext == ".parquet":
        import pyarrow.parquet as pq

        file = pq.ParquetFile(path)
        top = domain_field.split(".")[0] if domain_field else None
        columns = [text_key] + ([top] if top and top in file.schema_arrow.names else [])
        for batch in file.iter_batches(columns=columns):
            for row in batch.to_pylist():
                yield (field(row, domain_field) if domain_field else None), row[text_key]
        return
    with _open_text(path, ext) as stream:
        for lineno, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise RegmixError(f"{path}:{lineno} is not valid JSON ({e.msg}); fix or remove that line") from None
            if not isinstance(obj, dict) or not isinstance(obj.get(text_key), str):
                raise RegmixError(f"{path}:{lineno} has no string field {text_key!r}; set --text_key to the text field")
            yield (field(obj, domain_field) if domain_field else None), obj[text_key]


def _open_text(path: Path, ext: str):
    """A text stream over a (possibly compressed) line-based file; closing it closes the file."""
    if ext == ".jsonl.zst":
        import zstandard

        return io.TextIOWrapper(
            zstandard.ZstdDecompressor().stream_reader(path.open("rb"), closefd=True), encoding="utf-8"
        )
    if ext == ".jsonl.gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def discover(root: Path, layout: str, domain_field: str | None) -> list[tuple[Path, str | None]]:
    """List ``(file, raw domain)`` pairs under ``root``; the domain is ``None`` when a field names it per document."""
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.is_file() and extension(p))
    else:
        raise FileNotFoundError(f"--source {str(root)!r} does not exist")
    if not files:
        raise FileNotFoundError(f"--source {str(root)!r} holds no {', '.join(EXTENSIONS)} files")
    if layout == "auto":
        layout = (
            "field" if domain_field else ("dirs" if root.is_dir() and any(p.parent != root for p in files) else "files")
        )
    if layout == "field":
        if not domain_field:
            raise ValueError("--layout field needs --domain_field, e.g. --domain_field meta.pile_set_name")
        return [(p, None) for p in files]
    if layout == "dirs":
        return [(p, p.relative_to(root).parts[0]) for p in files if len(p.relative_to(root).parts) > 1]
    out = []
    for p in files:
        stem = p.name[: -len(extension(p))]
        m = _SHARD.match(stem)
        if not m:
            raise ValueError(
                f"{p}: --layout files expects names '<domain>-<shard>{extension(p)}', e.g. arxiv-00001.jsonl"
            )
        out.append((p, m["domain"]))
    return out


def read_texts(
    source: str | Path | list[str | Path],
    text_key: str = "text",
    layout: str = "auto",
    domain_field: str | None = None,
) -> Iterator[str]:
    """Yield the text of every document of a raw corpus, in the file order ``prepare`` uses.

    Accepts what ``regmix prepare --source`` accepts (any layout and format), so a throwaway tokenizer can
    be trained offline from the corpus it will tokenize (see the module docstring).
    """
    sources = [source] if isinstance(source, (str, Path)) else list(source)
    for root in sources:
        for path, _ in discover(Path(root), layout, domain_field):
            for _, text in iter_documents(path, text_key, domain_field):
                yield text
