"""The prepared-corpus manifest: what `regmix prepare` wrote, read back by every later stage.

Layout of a prepared corpus (``--data_path``)::

    DATA/manifest.json            # this file's format, version FORMAT_VERSION
    DATA/<domain>/train/          # litdata-optimized token chunks (index.json + chunk-*.bin)
    DATA/<domain>/val/            # same, held-out; a domain may have val only (an evaluation target)

A domain's entry exists in the manifest only once both of its splits are fully written, so a domain that
is listed is complete.
"""

from __future__ import annotations

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


@dataclass
class Manifest:
    """The parsed ``manifest.json`` of a prepared corpus."""

    tokenizer_hash: str
    vocab_size: int
    domains: dict[str, DomainStats]
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)

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

    def train_domains(self) -> list[str]:
        return [d for d, t in self.train_tokens().items() if t > 0]

    def val_domains(self) -> list[str]:
        return [d for d, s in sorted(self.domains.items()) if s.val.tokens > 0]

    def to_dict(self) -> dict:
        return {
            "format_version": self.format_version,
            "tokenizer": {"hash": self.tokenizer_hash, "vocab_size": self.vocab_size},
            "domains": {d: asdict(s) for d, s in sorted(self.domains.items())},
            **({"extra": self.extra} if self.extra else {}),
        }

    def write(self, data_path: str | Path) -> None:
        write_json(Path(data_path) / MANIFEST, self.to_dict())


def read_manifest(data_path: str | Path, flag: str = "--data_path") -> Manifest:
    """Read ``DATA/manifest.json``; errors name ``flag`` and say how to produce the file."""
    path = Path(data_path) / MANIFEST
    raw = read_document(
        path, f"{flag} {str(data_path)!r} has no {MANIFEST}; run `regmix prepare --out_dir {data_path} ...` first",
        "delete it and re-run `regmix prepare`")
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format_version {version!r}, this regmix-plugin reads {FORMAT_VERSION}; "
            "re-run `regmix prepare` with this version"
        )
    domains = {
        name: DomainStats(
            train=SplitStats(**d.get("train", {})), val=SplitStats(**d.get("val", {})), sources=d.get("sources", [])
        )
        for name, d in raw["domains"].items()
    }
    return Manifest(
        tokenizer_hash=raw["tokenizer"]["hash"],
        vocab_size=int(raw["tokenizer"]["vocab_size"]),
        domains=domains,
        format_version=version,
        extra=raw.get("extra", {}),
    )
