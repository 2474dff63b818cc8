"""``regmix prepare``: turn a raw multi-domain corpus into per-domain litdata token chunks and a manifest.

    regmix prepare --source raw/ --tokenizer_dir checkpoints/EleutherAI/pythia-160m --out_dir data/pile

Worker processes tokenize one input file each into temporary ``.npy`` files; the main process then writes
each domain's chunks in sorted file order (so the output does not depend on worker timing), renames the
finished domain into place and only then lists it in ``manifest.json``. A domain in the manifest is
therefore complete, and a re-run skips it.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import zlib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np

from regmix_plugin.formats.manifest import MANIFEST, DomainStats, Manifest, SplitStats, read_manifest
from regmix_plugin.mixture import is_safe_domain, normalize_domain
from regmix_plugin.tokenizer import check_tokenizer, tokenizer_hash, vocab_size

EXTENSIONS = (".txt", ".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet")
_SHARD = re.compile(r"^(?P<domain>.+)-(?P<shard>[^-]+)$")


def _ext(path: Path) -> str | None:
    name = path.name.lower()
    return next((e for e in sorted(EXTENSIONS, key=len, reverse=True) if name.endswith(e)), None)


def _field(obj: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def iter_documents(path: Path, text_key: str, domain_field: str | None) -> Iterator[tuple[str | None, str]]:
    """Yield ``(raw domain or None, text)`` for every document of one file."""
    ext = _ext(path)
    if ext == ".txt":
        yield None, path.read_text(encoding="utf-8", errors="replace")
        return
    if ext == ".parquet":
        import pyarrow.parquet as pq

        columns = [text_key] + ([domain_field.split(".")[0]] if domain_field else [])
        for batch in pq.ParquetFile(path).iter_batches(columns=columns):
            for row in batch.to_pylist():
                yield (_field(row, domain_field) if domain_field else None), row[text_key]
        return
    with _open_text(path, ext) as stream:
        for lineno, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno} is not valid JSON ({e.msg}); fix or remove that line") from None
            if not isinstance(obj, dict) or not isinstance(obj.get(text_key), str):
                raise ValueError(f"{path}:{lineno} has no string field {text_key!r}; set --text_key to the text field")
            yield (_field(obj, domain_field) if domain_field else None), obj[text_key]


def _open_text(path: Path, ext: str):
    """A text stream over a (possibly compressed) line-based file; closing it closes the file."""
    if ext == ".jsonl.zst":
        import zstandard

        return io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(path.open("rb"), closefd=True),
                                encoding="utf-8")
    if ext == ".jsonl.gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def discover(root: Path, layout: str, domain_field: str | None) -> list[tuple[Path, str | None]]:
    """List ``(file, raw domain)`` pairs under ``root``; the domain is ``None`` when a field names it per document."""
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.is_file() and _ext(p))
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
        stem = p.name[: -len(_ext(p))]
        m = _SHARD.match(stem)
        if not m:
            raise ValueError(f"{p}: --layout files expects names '<domain>-<shard>{_ext(p)}', e.g. arxiv-00001.jsonl")
        out.append((p, m["domain"]))
    return out


_TOKENIZER = None


def _load_tokenizer(tokenizer_dir: str) -> None:
    """Load the tokenizer once per process; workers forked after this inherit it (and litgpt's imports)."""
    global _TOKENIZER
    from litgpt.tokenizer import Tokenizer

    _TOKENIZER = Tokenizer(tokenizer_dir)


def _tokenize_file(job: dict) -> dict:
    """Worker: tokenize one file into ``{tmp}/{domain}.{split}.npy`` files; return their sizes."""
    if _TOKENIZER is None:
        _load_tokenizer(job["tokenizer_dir"])
    tok, dtype = _TOKENIZER, np.dtype(job["dtype"])
    buffers: dict[tuple[str, str], list[np.ndarray]] = {}
    docs: dict[tuple[str, str], int] = {}
    seen: dict[str, int] = {}
    k = job["val_every"]
    pending: list[tuple[str, str, str]] = []

    def flush() -> None:
        texts = [t for _, _, t in pending]
        if tok.backend == "huggingface":
            ids = [e.ids for e in tok.processor.encode_batch(texts)]
        else:
            ids = [tok.processor.encode(t) for t in texts]
        for (domain, split, _), seq in zip(pending, ids, strict=True):
            if seq and tok.bos_id is not None and seq[0] == tok.bos_id:
                seq = seq[1:]
            if tok.eos_id is not None:
                seq = list(seq) + [tok.eos_id]
            buffers.setdefault((domain, split), []).append(np.asarray(seq, dtype=dtype))
            docs[(domain, split)] = docs.get((domain, split), 0) + 1
        pending.clear()

    for raw, text in iter_documents(Path(job["path"]), job["text_key"], job["domain_field"]):
        raw = job["domain"] if job["domain"] is not None else raw
        if raw is None:
            continue
        domain = normalize_domain(raw)
        if domain in job["skip"]:
            continue
        i = seen[domain] = seen.get(domain, -1) + 1
        # keyed on the path inside its source, so the split does not depend on where the corpus lives
        offset = zlib.crc32(f"{job['key']}:{domain}".encode()) % k if k else 0
        split = job["split"] or ("val" if k and (i + offset) % k == 0 else "train")
        pending.append((domain, split, text))
        if len(pending) >= 256:
            flush()
    flush()
    out = {}
    tmp = Path(job["tmp"])
    tmp.mkdir(parents=True, exist_ok=True)
    for (domain, split), arrays in buffers.items():
        tokens = np.concatenate(arrays)
        np.save(tmp / f"{domain}.{split}.npy", tokens)
        out[f"{domain}.{split}"] = {"tokens": int(tokens.size), "documents": docs[(domain, split)]}
    return {
        "index": job["index"],
        "raw": {normalize_domain(r): r for r in seen} if job["domain"] is None else {},
        "sizes": out,
    }


def _write_split(npy_files: list[Path], out: Path, chunk_bytes: str) -> None:
    from litdata import TokensLoader
    from litdata.streaming.writer import BinaryWriter

    from regmix_plugin.litgpt_compat import bytes_to_int, empty_token_index

    out.mkdir(parents=True, exist_ok=True)
    writer = BinaryWriter(str(out), chunk_bytes=chunk_bytes, item_loader=TokensLoader())
    i = 0
    for f in npy_files:
        tokens = np.load(f, mmap_mode="r")
        # items no larger than a chunk, so chunks come out at the requested size
        step = max(1, min(1 << 20, bytes_to_int(chunk_bytes) // tokens.dtype.itemsize - 64))
        for start in range(0, tokens.size, step):
            writer.add_item(i, np.ascontiguousarray(tokens[start : start + step]))
            i += 1
    if i == 0:  # an empty split still gets a valid (empty) index so readers need no special case
        (out / "index.json").write_text(json.dumps(empty_token_index()))
        return
    writer.done()
    writer.merge()


def prepare(
    source: list[str] | str,
    tokenizer_dir: Path,
    out_dir: Path,
    layout: Literal["auto", "dirs", "files", "field"] = "auto",
    domain_field: str | None = None,
    text_key: str = "text",
    val_fraction: float = 0.01,
    val_source: list[str] | str | None = None,
    num_workers: int | None = None,
    chunk_bytes: str = "64MB",
) -> Manifest:
    """Tokenize a raw corpus into per-domain litdata chunks (train and val) and write ``manifest.json``.

    Example: ``regmix prepare --source raw/ --tokenizer_dir tok/ --out_dir data/demo`` (several sources:
    ``--source [raw/a,raw/b]``).

    Arguments:
        source: Raw corpus paths: a directory with one sub-directory per domain (``dirs``), files named
            ``<domain>-<shard>.jsonl`` (``files``, the official RegMix layout), or JSONL/Parquet files whose
            ``--domain_field`` names each document's domain (``field``). Files may be .txt (one document per
            file), .jsonl, .jsonl.gz, .jsonl.zst or .parquet.
        tokenizer_dir: LitGPT tokenizer directory (tokenizer.json or tokenizer.model); its hash goes in the manifest.
        out_dir: Where the prepared corpus goes; pass it as ``--data.data_path`` to MixtureData.
        layout: How ``source`` names domains; ``auto`` picks ``field`` if ``--domain_field`` is set, else
            ``dirs`` if files sit in sub-directories, else ``files``.
        domain_field: Dotted JSON path of the domain label, e.g. ``meta.pile_set_name`` for the Pile's raw shards.
        text_key: Field holding the text in JSONL/Parquet records.
        val_fraction: Share of each file's documents held out for validation (every k-th document,
            k = round(1/val_fraction)); ignored when ``val_source`` is given.
        val_source: Separate raw validation corpus in the same layout; a domain may appear only here (an
            evaluation target, like the paper's out-of-distribution Pile-CC).
        num_workers: Tokenizer processes; default: all CPU cores.
        chunk_bytes: Size of each litdata chunk file.
    """
    from tqdm import tqdm

    out_dir, tokenizer_dir = Path(out_dir), Path(tokenizer_dir)
    sources = [source] if isinstance(source, (str, Path)) else list(source)
    val_sources = [val_source] if isinstance(val_source, (str, Path)) else list(val_source or [])
    if not 0 <= val_fraction < 1:
        raise ValueError(f"--val_fraction must be in [0, 1), got {val_fraction}")
    tok_hash, vocab = tokenizer_hash(tokenizer_dir), vocab_size(tokenizer_dir)
    if (out_dir / MANIFEST).is_file():
        manifest = read_manifest(out_dir, flag="--out_dir")
        check_tokenizer(
            tokenizer_dir,
            manifest.tokenizer_hash,
            "--tokenizer_dir",
            f"--out_dir {str(out_dir)!r}",
            fix="use a new --out_dir or delete the old one",
        )
    else:
        manifest = Manifest(tokenizer_hash=tok_hash, vocab_size=vocab, domains={})
    done = set(manifest.domains)

    listed = [(p, d, None, s) for s in sources for p, d in discover(Path(s), layout, domain_field)]
    listed += [(p, d, "val", s) for s in val_sources for p, d in discover(Path(s), layout, domain_field)]
    _check_names({d for _, d, _, _ in listed if d is not None})
    for partial in out_dir.glob(".*.partial"):  # left by an interrupted run: never trusted, redone
        shutil.rmtree(partial)
    tmp_root = out_dir / ".prepare-tmp"
    shutil.rmtree(tmp_root, ignore_errors=True)
    jobs = [
        {
            "index": i,
            "path": str(p),
            "domain": d,
            "split": split,
            "tokenizer_dir": str(tokenizer_dir),
            "key": p.name if Path(root).is_file() else p.relative_to(root).as_posix(),
            "text_key": text_key,
            "domain_field": domain_field,
            "skip": done,
            "tmp": str(tmp_root / f"{i:06d}"),
            "dtype": "uint16" if vocab <= 65535 else "int32",
            "val_every": 0 if val_sources or val_fraction == 0 else max(1, round(1 / val_fraction)),
        }
        for i, (p, d, split, root) in enumerate(listed)
        if d is None or normalize_domain(d) not in done
    ]
    results, raw_names = [], {}
    workers = max(1, min(num_workers or os.cpu_count() or 1, len(jobs)))
    if jobs:
        import multiprocessing

        _load_tokenizer(str(tokenizer_dir))
        context = multiprocessing.get_context("fork") if os.name == "posix" else None
        with (
            ProcessPoolExecutor(workers, mp_context=context) as pool,
            tqdm(total=len(jobs), desc="tokenizing files", unit="file") as bar,
        ):
            for r in pool.map(_tokenize_file, jobs):
                results.append(r)
                raw_names.update(r["raw"])
                bar.update()
    for _, d, _, _ in listed:
        if d is not None:
            raw_names[normalize_domain(d)] = d
    _check_names(set(raw_names.values()))
    new = sorted({key.rsplit(".", 1)[0] for r in results for key in r["sizes"]} - done)
    for domain in tqdm(new, desc="writing domains", unit="domain"):
        stats = DomainStats(sources=[raw_names.get(domain, domain)])
        partial = out_dir / f".{domain}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        for split in ("train", "val"):
            key = f"{domain}.{split}"
            files = [tmp_root / f"{r['index']:06d}" / f"{key}.npy" for r in results if key in r["sizes"]]
            _write_split(files, partial / split, chunk_bytes)
            sizes = [r["sizes"][key] for r in results if key in r["sizes"]]
            setattr(stats, split, SplitStats(sum(s["tokens"] for s in sizes), sum(s["documents"] for s in sizes)))
        if (out_dir / domain).exists():  # renamed into place by a run that died before listing it
            shutil.rmtree(out_dir / domain)
        os.replace(partial, out_dir / domain)
        manifest.domains[domain] = stats
        manifest.write(out_dir)
    shutil.rmtree(tmp_root, ignore_errors=True)
    manifest.write(out_dir)
    return manifest


def _check_names(raw: set[str]) -> None:
    by_norm: dict[str, list[str]] = {}
    for r in raw:
        by_norm.setdefault(normalize_domain(r), []).append(r)
    clashes = {n: sorted(rs) for n, rs in by_norm.items() if len(rs) > 1}
    if clashes:
        raise ValueError(
            "these domain labels map to the same directory name: "
            + "; ".join(f"{sorted(rs)} -> {n!r}" for n, rs in clashes.items())
            + ". Rename them so they differ in letters or digits"
        )
    bad = [n for n in by_norm if not is_safe_domain(n)]
    if bad:
        raise ValueError(f"domain names {bad} are too long for directory names; shorten them")
