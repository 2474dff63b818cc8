"""The prepared-corpus manifest: what `regmix prepare` wrote, read back by every later stage.

Layout of a prepared corpus (``--data_path``)::

    DATA/manifest.json            # this file's format, version FORMAT_VERSION
    DATA/<domain>/train/          # litdata-optimized token chunks (index.json + chunk-*.bin)
    DATA/<domain>/val/            # same, held-out; a domain may have val only (an evaluation target)

A domain's entry exists in the manifest only once both of its splits are fully written, so a domain that
is listed is complete. Each entry records the size and SHA-256 of every file it wrote (``chunks``), so a
chunk truncated or damaged later is found: by size whenever MixtureData sets up or ``prepare`` re-runs, by
checksum with ``regmix prepare --verify true``.

``chunks``, ``max_token_id``, ``prepared_with`` and ``dropped`` were added without a format-version bump: they
are optional on read (a manifest written before them still reads; its chunks cannot be checked, which
``--verify`` says, and its repair command has placeholders), and older readers ignore them, so a corpus never
has to be re-tokenized just to be read.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from regmix_plugin.atomic import write_json
from regmix_plugin.formats.document import read_document

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


@dataclass
class SplitStats:
    """Size of one split of one domain."""

    tokens: int = 0
    documents: int = 0


@dataclass
class DomainStats:
    """What `prepare` wrote for one domain."""

    train: SplitStats = field(default_factory=SplitStats)
    val: SplitStats = field(default_factory=SplitStats)
    sources: list[str] = field(default_factory=list)
    max_token_id: int | None = None
    """The largest token id in the domain's chunks (None: prepared before it was recorded)."""
    chunks: dict[str, dict] | None = None
    """``{"train/chunk-0-0.bin": {"bytes": N, "sha256": "..."}, ...}``: every file of the domain's directory."""
    prepared_with: list[str] | None = None
    """The ``regmix prepare`` flags that wrote the domain (absolute paths, no ``--out_dir``): how to re-do it."""


def record_chunks(domain_dir: Path) -> dict[str, dict]:
    """Sizes and SHA-256 of every file under a domain's directory, keyed by path relative to it."""
    out = {}
    for path in sorted(p for p in Path(domain_dir).rglob("*") if p.is_file()):
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        out[path.relative_to(domain_dir).as_posix()] = {"bytes": path.stat().st_size, "sha256": digest}
    return out


def chunk_problems(domain_dir: Path, stats: DomainStats, checksums: bool = False) -> list[str]:
    """What is wrong with a domain's files compared with the manifest: missing, wrong size, wrong checksum.

    Sizes cost one ``stat`` per file; checksums read every byte. Empty when the manifest has no record.
    """
    problems = []
    for name, rec in sorted((stats.chunks or {}).items()):
        path = Path(domain_dir) / name
        if not path.is_file():
            problems.append(f"{path} is missing")
            continue
        size = path.stat().st_size
        if size != rec["bytes"]:
            problems.append(f"{path} is {size:,} bytes, the manifest says {rec['bytes']:,} (truncated?)")
        elif checksums:
            with open(path, "rb") as f:
                if hashlib.file_digest(f, "sha256").hexdigest() != rec["sha256"]:
                    problems.append(f"{path} does not match its SHA-256 in the manifest (damaged)")
    return problems


def damaged_domains(data_path: Path, manifest: Manifest, domains: list[str] | None = None) -> dict[str, list[str]]:
    """``{domain: problems}`` for the listed ``domains`` (default: all) whose files disagree with the manifest.

    A split with tokens but no ``index.json`` (the one check possible for a corpus prepared before chunk
    records), and every missing or wrong-sized file (:func:`chunk_problems`); one ``stat`` per file.
    """
    out = {}
    for d in sorted(manifest.domains if domains is None else domains):
        stats = manifest.domains[d]
        problems = chunk_problems(Path(data_path) / d, stats)
        for split in ("train", "val"):
            index = Path(data_path) / d / split / "index.json"
            if getattr(stats, split).tokens and not index.is_file() and f"{index} is missing" not in problems:
                problems.append(f"{index} is missing")
        if problems:
            out[d] = problems
    return out


def damage_message(data_path: Path, manifest: Manifest, damaged: dict[str, list[str]]) -> str:
    """One message naming every damaged domain and file of :func:`damaged_domains`, and the command that repairs it."""
    lines = [f"the prepared corpus {str(data_path)!r} is damaged ({len(damaged)} domain(s)):"]
    lines += [f"    domain {d!r}: {'; '.join(problems)}" for d, problems in sorted(damaged.items())]
    lines.append(
        "    repair (re-does only the damaged domains, keeps the others): "
        + "; ".join(repair_commands(data_path, manifest, sorted(damaged)))
    )
    return "\n".join(lines)


def repair_commands(data_path: Path, manifest: Manifest, domains: list[str]) -> list[str]:
    """The ``regmix prepare`` command line(s) that re-do ``domains``, from the flags recorded with each."""
    import shlex

    by_command: dict[tuple[str, ...], list[str]] = {}
    for d in domains:
        recorded = manifest.domains[d].prepared_with or [  # prepared before the flags were recorded
            "--source",
            "<its raw corpus>",
            "--tokenizer_dir",
            "<its tokenizer>",
        ]
        by_command.setdefault(tuple(recorded), []).append(d)
    return [
        shlex.join(["regmix", "prepare", *flags, "--out_dir", str(data_path)])
        + ("" if len(by_command) == 1 else f" (for {', '.join(ds)})")
        for flags, ds in by_command.items()
    ]


@dataclass
class Manifest:
    """The parsed ``manifest.json`` of a prepared corpus."""

    tokenizer_hash: str
    vocab_size: int
    domains: dict[str, DomainStats]
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    """Documents the last ``prepare`` run dropped, per reason (e.g. ``missing_domain_field``)."""

    def max_token_id(self, domains: list[str] | None = None) -> int:
        """The largest token id in ``domains`` (default: all); the tokenizer's largest id where not recorded."""
        ids = [
            s.max_token_id if s.max_token_id is not None else self.vocab_size - 1
            for d, s in self.domains.items()
            if domains is None or d in domains
        ]
        return max(ids, default=-1)

    def vocab_problems(self, padded_vocab_size: int, domains: list[str] | None = None, where: str = "") -> list[str]:
        """Why a model with ``padded_vocab_size`` embedding rows cannot train on this corpus (empty: it can).

        A token id at or above the model's vocabulary indexes past its embedding table: an inductor "index out
        of bounds" or an abort mid-run, so it is refused at set-up.
        """
        top = self.max_token_id(domains)
        if top < padded_vocab_size:
            return []
        return [
            f"token id {top} >= model padded_vocab_size {padded_vocab_size}{where}: the corpus was prepared with a "
            f"tokenizer of {self.vocab_size} ids; set model_config.padded_vocab_size (and vocab_size) to at least "
            f"{self.vocab_size}, or prepare the corpus with the model's tokenizer"
        ]

    def train_tokens(self) -> dict[str, int]:
        """Train tokens per domain (domains without train data included, with 0)."""
        return {d: s.train.tokens for d, s in sorted(self.domains.items())}

    def natural_weights(self, temperature: float = 1.0) -> dict[str, float]:
        """The token distribution of the train splits, optionally tempered (``p ** temperature``, renormalised)."""
        tokens = {d: t for d, t in self.train_tokens().items() if t > 0}
        if not tokens:
            raise ValueError("the manifest lists no domain with train tokens; run `regmix prepare` on a corpus first")
        scaled = {d: float(t) ** temperature for d, t in tokens.items()}
        total = sum(scaled.values())
        return {d: scaled.get(d, 0.0) / total for d in self.train_tokens()}

    def fingerprints(self) -> dict[str, str | None]:
        """A content fingerprint per domain: the sha256 of its recorded token chunks' paths and sha256s (train and
        val), so two preparations agree exactly when every byte of the domain's tokens does. The litdata
        ``index.json`` files are left out: they hold the time they were written, so no two preparations would
        agree. None for a domain prepared before checksums were recorded. Mixture reuse (``regmix sample
        --reuse``) calls a domain unchanged when its name and fingerprint match."""
        out: dict[str, str | None] = {}
        for d, s in sorted(self.domains.items()):
            if not s.chunks:
                out[d] = None
                continue
            h = hashlib.sha256()
            for path, rec in sorted(s.chunks.items()):
                if Path(path).name != "index.json":
                    h.update(f"{path}\t{rec['sha256']}\n".encode())
            out[d] = h.hexdigest()
        return out

    def train_domains(self) -> list[str]:
        return [d for d, t in self.train_tokens().items() if t > 0]

    def val_domains(self) -> list[str]:
        return [d for d, s in sorted(self.domains.items()) if s.val.tokens > 0]

    def to_dict(self) -> dict:
        return {
            "format_version": self.format_version,
            "tokenizer": {"hash": self.tokenizer_hash, "vocab_size": self.vocab_size},
            "domains": {
                d: {k: v for k, v in asdict(s).items() if v is not None} for d, s in sorted(self.domains.items())
            },
            **({"dropped": self.dropped} if self.dropped else {}),
            **({"extra": self.extra} if self.extra else {}),
        }

    def write(self, data_path: str | Path) -> None:
        write_json(Path(data_path) / MANIFEST, self.to_dict())


def read_manifest(data_path: str | Path, flag: str = "--data_path") -> Manifest:
    """Read ``DATA/manifest.json``; errors name ``flag`` and say how to produce the file."""
    path = Path(data_path) / MANIFEST
    raw = read_document(
        path,
        f"{flag} {str(data_path)!r} has no {MANIFEST}; run `regmix prepare --out_dir {data_path} ...` first",
        "delete it and re-run `regmix prepare`",
    )
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format_version {version!r}, this regmix-plugin reads {FORMAT_VERSION}; "
            "re-run `regmix prepare` with this version"
        )
    domains = {
        name: DomainStats(
            train=SplitStats(**d.get("train", {})),
            val=SplitStats(**d.get("val", {})),
            sources=d.get("sources", []),
            max_token_id=d.get("max_token_id"),
            chunks=d.get("chunks"),
            prepared_with=d.get("prepared_with"),
        )
        for name, d in raw["domains"].items()
    }
    return Manifest(
        tokenizer_hash=raw["tokenizer"]["hash"],
        vocab_size=int(raw["tokenizer"]["vocab_size"]),
        domains=domains,
        format_version=version,
        extra=raw.get("extra", {}),
        dropped=raw.get("dropped", {}),
    )
