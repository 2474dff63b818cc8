"""``regmix prepare``: turn a raw multi-domain corpus into per-domain litdata token chunks and a manifest.

    regmix prepare --source raw/ --tokenizer_dir checkpoints/EleutherAI/pythia-160m --out_dir data/pile

Worker processes tokenize one input file each into temporary ``.npy`` files; the main process then writes
each domain's chunks in sorted file order (so the output does not depend on worker timing), renames the
finished domain into place and only then lists it in ``manifest.json``. A domain in the manifest is
therefore complete, and a re-run skips it.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np

from regmix_plugin.commands.prepare_verify import report_damage, verify_only, warn_small
from regmix_plugin.errors import RegmixError
from regmix_plugin.formats.manifest import (
    MANIFEST,
    DomainStats,
    Manifest,
    SplitStats,
    read_manifest,
    record_chunks,
    repair_commands,
)
from regmix_plugin.formats.raw_corpus import discover, first_document_keys, iter_documents
from regmix_plugin.tokenizer import check_tokenizer, tokenizer_hash, vocab_size
from regmix_plugin.weights import is_safe_domain, normalize_domain

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
    labels: dict[str, set[str]] = {}
    dropped: dict[str, int] = {}
    k = job["val_every"]
    pending: list[tuple[str, str, str]] = []
    path = Path(job["path"])

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

    for n, (raw, text) in enumerate(iter_documents(path, job["text_key"], job["domain_field"]), 1):
        raw = job["domain"] if job["domain"] is not None else raw
        if raw is None:
            if job["on_missing_domain"] == "error":
                raise RegmixError(
                    f"{path}: document {n} has no field {job['domain_field']!r} (--domain_field); "
                    f"{_keys_hint(path)}. Fix --domain_field, or pass --on_missing_domain skip to drop such "
                    "documents (they are counted in the manifest)"
                )
            dropped[MISSING_DOMAIN] = dropped.get(MISSING_DOMAIN, 0) + 1
            continue
        domain = normalize_domain(raw)
        labels.setdefault(domain, set()).add(str(raw))
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
        out[f"{domain}.{split}"] = {
            "tokens": int(tokens.size),
            "documents": docs[(domain, split)],
            "max_id": int(tokens.max()) if tokens.size else -1,
        }
    return {
        "index": job["index"],
        "labels": {d: sorted(r) for d, r in labels.items()} if job["domain"] is None else {},
        "dropped": dropped,
        "sizes": out,
    }


#: The reason a document is dropped when ``--domain_field`` is missing from it (the manifest's ``dropped`` key).
MISSING_DOMAIN = "missing_domain_field"


def _keys_hint(path: Path) -> str:
    try:
        keys = first_document_keys(path)
    except Exception:  # the hint is best-effort; the error it decorates is the one to report
        keys = []
    return f"keys found in the first document of {path.name}: {', '.join(keys) or '(none)'}"


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
    source: list[str] | str | None = None,
    tokenizer_dir: Path | None = None,
    out_dir: Path = Path("data/"),
    layout: Literal["auto", "dirs", "files", "field"] = "auto",
    domain_field: str | None = None,
    on_missing_domain: Literal["error", "skip"] = "error",
    text_key: str = "text",
    val_fraction: float = 0.01,
    val_source: list[str] | str | None = None,
    num_workers: int | None = None,
    chunk_bytes: str = "64MB",
    verify: bool = False,
    block_size: int | None = None,
) -> Manifest:
    """Tokenize a raw corpus into per-domain litdata chunks (train and val) and write ``manifest.json``.

    Example: ``regmix prepare --source raw/ --tokenizer_dir tok/ --out_dir data/demo`` (several sources:
    ``--source [raw/a,raw/b]``). Check a prepared corpus: ``regmix prepare --verify true --out_dir data/demo``.

    Arguments:
        source: Raw corpus paths: a directory with one sub-directory per domain (``dirs``), files named
            ``<domain>-<shard>.jsonl`` (``files``, the official RegMix layout), or JSONL/Parquet files whose
            ``--domain_field`` names each document's domain (``field``). Files may be .txt (one document per
            file), .jsonl, .jsonl.gz, .jsonl.zst or .parquet. Optional only with ``--verify``.
        tokenizer_dir: LitGPT tokenizer directory (tokenizer.json or tokenizer.model); its hash goes in the manifest.
        out_dir: Where the prepared corpus goes; pass it as ``--data.data_path`` to MixtureData.
        layout: How ``source`` names domains; ``auto`` picks ``field`` if ``--domain_field`` is set, else
            ``dirs`` if files sit in sub-directories, else ``files``.
        domain_field: Dotted JSON path of the domain label, e.g. ``meta.pile_set_name`` for the Pile's raw shards.
        on_missing_domain: What to do with a document that lacks ``--domain_field``: ``error`` stops (naming
            the file and the keys it has), ``skip`` drops it; drops are counted in the manifest's ``dropped``.
        text_key: Field holding the text in JSONL/Parquet records.
        val_fraction: Share of each file's documents held out for validation (every k-th document,
            k = round(1/val_fraction)); ignored when ``val_source`` is given.
        val_source: Separate raw validation corpus in the same layout; a domain may appear only here (an
            evaluation target, like the paper's out-of-distribution Pile-CC).
        num_workers: Tokenizer processes; default: all CPU cores.
        chunk_bytes: Size of each litdata chunk file.
        verify: Check every finished domain's chunk files against the sizes and SHA-256 checksums in the
            manifest (without it a re-run checks sizes only). Without ``--source`` it only reads and reports:
            on damage it names each damaged file and the command that repairs it, changes nothing and exits 2.
            With ``--source`` a damaged domain is prepared again; it stays listed in the manifest until its
            new chunks replace it.
        block_size: The block size of the model the corpus is for (the recipe's ``model_config.block_size``):
            a domain with less than ``block_size + 1`` train tokens in its chunks is warned about, since
            MixtureData cannot sample it. Default: assume LitGPT's 2048.
    """
    out_dir = Path(out_dir)
    if not source:
        if not verify:
            raise ValueError("--source is required (it may be left out only with --verify true)")
        manifest = verify_only(out_dir)
        warn_small(out_dir, manifest, block_size)
        return manifest
    command = _prepare_command(
        source, tokenizer_dir, layout, domain_field, on_missing_domain, text_key, val_fraction, val_source, chunk_bytes
    )
    if tokenizer_dir is None:
        raise ValueError("--tokenizer_dir is required with --source")
    tokenizer_dir = Path(tokenizer_dir)
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
        redo = set(report_damage(out_dir, manifest, checksums=verify, redo=True))
    else:
        manifest = Manifest(tokenizer_hash=tok_hash, vocab_size=vocab, domains={})
        redo = set()
    # a damaged domain keeps its (old) manifest entry until its new chunks are in place, so no crash or
    # missing source can leave a domain unlisted that the user never asked to remove
    done = set(manifest.domains) - redo

    listed = [(p, d, None, s) for s in sources for p, d in discover(Path(s), layout, domain_field)]
    listed += [(p, d, "val", s) for s in val_sources for p, d in discover(Path(s), layout, domain_field)]
    _check_names({d for _, d, _, _ in listed if d is not None}, manifest)
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
            "on_missing_domain": on_missing_domain,
            "skip": done,
            "tmp": str(tmp_root / f"{i:06d}"),
            "dtype": "uint16" if vocab <= 65535 else "int32",
            "val_every": 0 if val_sources or val_fraction == 0 else max(1, round(1 / val_fraction)),
        }
        for i, (p, d, split, root) in enumerate(listed)
        if d is None or normalize_domain(d) not in done
    ]
    results = None
    try:
        results = _tokenize(jobs, tokenizer_dir, num_workers)
        labels: dict[str, set[str]] = {}
        for r in results:
            for d, raws in r["labels"].items():
                labels.setdefault(d, set()).update(raws)
        for _, d, _, _ in listed:
            if d is not None:
                labels.setdefault(normalize_domain(d), set()).add(d)
        _check_names({r for raws in labels.values() for r in raws}, manifest)
        dropped: dict[str, int] = {}
        for r in results:
            for reason, n in r["dropped"].items():
                dropped[reason] = dropped.get(reason, 0) + n
        manifest.dropped = dropped
        new = sorted({key.rsplit(".", 1)[0] for r in results for key in r["sizes"]} - done)
        if not new and not manifest.domains:
            raise RegmixError(_nothing_prepared(listed, domain_field, dropped))
        lost = sorted(redo - set(new))
        if lost:
            shutil.rmtree(tmp_root, ignore_errors=True)
            raise RegmixError(
                f"damaged domain(s) {', '.join(lost)} of --out_dir {str(out_dir)!r} have no documents in --source, "
                "so they cannot be re-done; nothing was changed. Re-run with the source they were prepared from: "
                + "; ".join(repair_commands(out_dir, manifest, lost))
            )
        _write_domains(new, results, labels, manifest, out_dir, tmp_root, chunk_bytes, command)
    except OSError as e:
        if not _disk_full(e):
            raise
        # all files tokenized: the unfinished domains' temporary tokens are exactly what a re-run writes twice
        measured = (
            None
            if results is None
            else sum(f.stat().st_size for f in tmp_root.rglob("*.npy") if f.name.split(".")[0] not in done)
        )
        shutil.rmtree(tmp_root, ignore_errors=True)
        for partial in out_dir.glob(".*.partial"):
            shutil.rmtree(partial, ignore_errors=True)
        raise RegmixError(_disk_full_message(e, out_dir, listed, jobs, manifest, measured)) from None
    shutil.rmtree(tmp_root, ignore_errors=True)
    manifest.write(out_dir)
    warn_small(out_dir, manifest, block_size)
    if dropped:
        print(
            f"dropped {sum(dropped.values())} document(s): "
            + ", ".join(f"{n} {reason.replace('_', ' ')} ({domain_field})" for reason, n in dropped.items())
        )
    return manifest


def _tokenize(jobs: list[dict], tokenizer_dir: Path, num_workers: int | None) -> list[dict]:
    from tqdm import tqdm

    if not jobs:
        return []
    import multiprocessing

    results = []
    workers = max(1, min(num_workers or os.cpu_count() or 1, len(jobs)))
    _load_tokenizer(str(tokenizer_dir))
    context = multiprocessing.get_context("fork") if os.name == "posix" else None
    with (
        ProcessPoolExecutor(workers, mp_context=context) as pool,
        tqdm(total=len(jobs), desc="tokenizing files", unit="file") as bar,
    ):
        try:
            for r in pool.map(_tokenize_file, jobs):
                results.append(r)
                bar.update()
        except BaseException:
            pool.shutdown(cancel_futures=True)  # one file failed: do not tokenize the rest for nothing
            raise
    return results


def _write_domains(
    new, results, labels, manifest, out_dir: Path, tmp_root: Path, chunk_bytes: str, command: list[str]
) -> None:
    """Write each new domain's chunks under ``.<domain>.partial``, rename it into place, then list it."""
    from tqdm import tqdm

    for domain in tqdm(new, desc="writing domains", unit="domain"):
        stats = DomainStats(sources=sorted(labels.get(domain, {domain})), prepared_with=command)
        partial = out_dir / f".{domain}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        for split in ("train", "val"):
            key = f"{domain}.{split}"
            files = [tmp_root / f"{r['index']:06d}" / f"{key}.npy" for r in results if key in r["sizes"]]
            _write_split(files, partial / split, chunk_bytes)
            sizes = [r["sizes"][key] for r in results if key in r["sizes"]]
            setattr(stats, split, SplitStats(sum(s["tokens"] for s in sizes), sum(s["documents"] for s in sizes)))
            stats.max_token_id = max([stats.max_token_id or -1] + [s["max_id"] for s in sizes])
        stats.chunks = record_chunks(partial)
        if (out_dir / domain).exists():  # renamed into place by a run that died before listing it
            shutil.rmtree(out_dir / domain)
        os.replace(partial, out_dir / domain)
        manifest.domains[domain] = stats
        manifest.write(out_dir)


def _prepare_command(
    source, tokenizer_dir, layout, domain_field, on_missing_domain, text_key, val_fraction, val_source, chunk_bytes
) -> list[str]:
    """The flags of this run that shape its output (paths made absolute), recorded per domain for repairs."""

    def paths(value) -> str:
        items = [value] if isinstance(value, (str, Path)) else list(value)
        absolute = [str(Path(p).resolve()) for p in items]
        return absolute[0] if len(absolute) == 1 else "[" + ",".join(absolute) + "]"

    defaults = {
        "layout": "auto",
        "domain_field": None,
        "on_missing_domain": "error",
        "text_key": "text",
        "val_fraction": 0.01,
        "val_source": None,
        "chunk_bytes": "64MB",
    }
    given = {
        "layout": layout,
        "domain_field": domain_field,
        "on_missing_domain": on_missing_domain,
        "text_key": text_key,
        "val_fraction": val_fraction,
        "val_source": val_source or None,
        "chunk_bytes": chunk_bytes,
    }
    out = ["--source", paths(source), "--tokenizer_dir", str(Path(tokenizer_dir).resolve())]
    for key, value in given.items():
        if value != defaults[key]:
            out += [f"--{key}", paths(value) if key == "val_source" else str(value)]
    return out


def _nothing_prepared(listed, domain_field: str | None, dropped: dict[str, int]) -> str:
    first = listed[0][0] if listed else None
    if domain_field and first is not None:
        return (
            f"nothing was prepared: no document has the field {domain_field!r} (--domain_field; "
            f"{sum(dropped.values())} dropped); {_keys_hint(first)}"
        )
    return "nothing was prepared: the sources hold no documents"


def _disk_full(e: OSError) -> bool:
    # numpy's tofile reports a short write as "N requested and M written", without an errno
    return e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) or bool(re.search(r"requested and \d+ written", str(e)))


def _disk_full_message(e: OSError, out_dir: Path, listed, jobs, manifest: Manifest, measured: int | None) -> str:
    """Name the out_dir and how much free space a re-run needs: temporary token files plus chunks.

    ``measured`` is the size of the unfinished domains' temporary tokens when tokenizing had finished; before
    that it is estimated from the inputs: a token is about 4 bytes of text, compressed inputs hold ~4x their
    size in text.
    """
    pending = {p for p, d, _, _ in listed if d is None or normalize_domain(d) not in manifest.domains}
    if measured is None:
        text = sum(p.stat().st_size * (4 if p.name.endswith((".gz", ".zst", ".parquet")) else 1) for p in pending)
        measured = text * (np.dtype(jobs[0]["dtype"]).itemsize if jobs else 2) // 4
    need = 2 * measured  # the temporary .npy files and the chunks each hold every token once
    free = shutil.disk_usage(out_dir if out_dir.exists() else out_dir.parent).free
    return (
        f"out of disk space writing to --out_dir {str(out_dir)!r} ({e.strerror or e}): a re-run needs about "
        f"{_size(need)} free there for the {len(pending)} unfinished input file(s) ({_size(free)} free now). "
        f"Free some space or choose another --out_dir, then re-run; the "
        f"{len(manifest.domains)} finished domain(s) are kept and the temporary files were removed"
    )


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _check_names(raw: set[str], manifest: Manifest | None = None) -> None:
    """Refuse labels that would share a directory (``Pile-CC``, ``pile cc``, ``pile_cc``), listing them all."""
    by_norm: dict[str, set[str]] = {}
    for r in raw:
        by_norm.setdefault(normalize_domain(r), set()).add(r)
    for name, stats in manifest.domains.items() if manifest else ():
        if name in by_norm:  # a label that joins a domain an earlier run already prepared under another label
            by_norm[name].update(stats.sources)
    clashes = {n: sorted(rs) for n, rs in sorted(by_norm.items()) if len(rs) > 1}
    if clashes:
        raise RegmixError(
            "these domain labels map to the same directory name: "
            + "; ".join(f"{rs} -> {n!r}" for n, rs in clashes.items())
            + ". Rename them so they differ in letters or digits"
        )
    bad = [n for n in by_norm if not is_safe_domain(n)]
    if bad:
        raise RegmixError(f"domain names {bad} are too long for directory names; shorten them")
