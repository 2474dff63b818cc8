"""Sweep run records (``<sweep>/runs/<run_id>.json``) and the results table rebuilt from them.

One record per finished run, written atomically, so a record is whole or absent and the records are the
sweep's only state: a ``kill -9`` loses at most the runs in flight, and ``results.csv`` is rebuilt from them.
A staged proxy (``regmix sample --stages S``) keeps its stages in ``schedule`` and their mean in ``mixture``
(so the results table and a static ``regmix fit`` see the whole run's mixture); ``losses`` then include the
stage boundaries. Records written before ``schedule`` existed load with ``schedule: null`` (static).

    {"run_id": "mix-0001", "status": "done" | "failed", "mixture": {domain: weight},
     "losses": [{"tokens": 4096, "final": false, "losses": {domain: loss}}, ..., {"final": true, ...}],
     "schedule": null | [{"weights": {domain: weight}, "until_fraction": 0.5}, {"weights": {...}}],
     "tokens": 24576, "wall_s": 3.1, "seed": 42, "setup_hash": "sha256:...", "recipe_hash": "...",
     "manifest_hash": "...", "error": null | "first line ...", "log_tail": null | "...",
     "device": "cpu" | "NVIDIA H100 80GB HBM3", "peak_memory_bytes": null | 11811160064, "tokens_per_s": 630000.0,
     "loss_kernel": "plain" | "cut-cross-entropy"}

The last four fields are optional (records of older versions lack them and still load).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from regmix_plugin.atomic import write_json
from regmix_plugin.formats.mixture_table import ID_COLUMN, WEIGHT_PREFIX
from regmix_plugin.formats.results import loss_column, write_results
from regmix_plugin.formats.reuse import ReuseStructure

DONE, FAILED = "done", "failed"


@dataclass
class RunRecord:
    """What one proxy run left behind: its mixture, per-domain losses at every eval point, and bookkeeping."""

    run_id: str
    status: str
    mixture: dict[str, float]
    losses: list[dict[str, Any]] = field(default_factory=list)
    tokens: int | None = None
    schedule: list[dict[str, Any]] | None = None
    """The mixture in force on each segment (MixtureData ``schedule:`` stages) of a staged proxy; None: static."""
    wall_s: float | None = None
    seed: int | None = None
    setup_hash: str | None = None
    recipe_hash: str | None = None
    manifest_hash: str | None = None
    error: str | None = None
    log_tail: str | None = None
    device: str | None = None
    """``cpu`` or the GPU's name (``torch.cuda.get_device_name``); null in older records."""
    peak_memory_bytes: int | None = None
    """Peak GPU memory of the run (``torch.cuda.max_memory_allocated``, training and scoring); null on CPU."""
    tokens_per_s: float | None = None
    """Steady-state training tokens/s (median of LitGPT's rolling rate; excludes compilation and start-up)."""
    loss_kernel: str | None = None
    """How the loss was computed: ``plain`` (LitGPT's) or ``cut-cross-entropy`` (``--fused_loss``)."""
    compiled: bool | None = None
    """Whether the model was ``torch.compile``d (``--compile``); null in older records (they all were)."""

    @classmethod
    def from_dict(cls, raw: dict) -> RunRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def first_error_line(self) -> str:
        return (self.error or "failed").splitlines()[0] if self.error else "failed"

    def usage_line(self) -> str:
        """Device, peak memory and throughput in one line (``--status``); empty if the record has none."""
        parts = [self.device or ""]
        if self.peak_memory_bytes is not None:
            parts.append(f"peak {self.peak_memory_bytes / 2**30:.1f} GiB")
        if self.tokens_per_s is not None:
            parts.append(f"{self.tokens_per_s:,.0f} tokens/s")
        if self.loss_kernel:
            parts.append(f"loss {self.loss_kernel}")
        if self.compiled is not None:
            parts.append("compiled" if self.compiled else "eager")
        return ", ".join(p for p in parts if p)


def record_path(sweep_dir: Path, run_id: str) -> Path:
    return Path(sweep_dir) / "runs" / f"{run_id}.json"


def log_path(sweep_dir: Path, run_id: str) -> Path:
    return Path(sweep_dir) / "runs" / f"{run_id}.log"


def write_record(sweep_dir: Path, record: RunRecord) -> None:
    """Write one run's record atomically (the moment the run counts as finished)."""
    write_json(record_path(sweep_dir, record.run_id), asdict(record))


def read_record(sweep_dir: Path, run_id: str) -> RunRecord | None:
    """One run's record, or None if it has none (or an unreadable one, which counts as pending)."""
    path = record_path(sweep_dir, run_id)
    try:
        return RunRecord.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError, TypeError, KeyError):
        warnings.warn(f"{path} is unreadable and is treated as pending; delete it to silence this", stacklevel=2)
        return None


def read_records(sweep_dir: Path, flag: str | None = None) -> dict[str, RunRecord]:
    """Every readable record of a sweep, by run id.

    With ``flag`` (the option that named ``sweep_dir``), a directory that is missing or holds no ``runs/``
    is an error saying so; without it, it has no records.
    """
    if flag is not None and not (Path(sweep_dir) / "runs").is_dir():
        what = "does not exist" if not Path(sweep_dir).exists() else "is not a sweep directory (it has no runs/)"
        raise FileNotFoundError(
            f"{flag} {str(sweep_dir)!r} {what}; pass the --out_dir of a `regmix sweep` run "
            "(the directory holding sweep.json and runs/)"
        )
    records = (read_record(sweep_dir, p.stem) for p in sorted((Path(sweep_dir) / "runs").glob("*.json")))
    return {r.run_id: r for r in records if r is not None}


def table_rows(order: list[str], records: dict[str, RunRecord]) -> list[dict]:
    """One results-table row per recorded run, in ``order`` (mixtures-file order)."""
    rows = []
    for run_id in order:
        rec = records.get(run_id)
        if rec is None:
            continue
        row: dict[str, Any] = {ID_COLUMN: run_id}
        row.update({WEIGHT_PREFIX + d: w for d, w in rec.mixture.items()})
        for point in rec.losses:
            for d, loss in sorted(point["losses"].items()):
                row[loss_column(d, None if point["final"] else point["tokens"])] = loss
        row.update(status=rec.status, tokens=rec.tokens, wall_s=rec.wall_s, seed=rec.seed, error=rec.error or "")
        rows.append(row)
    return rows


def write_table(
    path: Path, order: list[str], records: dict[str, RunRecord], reuse: ReuseStructure | None = None
) -> None:
    """Rebuild the results table from the records, atomically, with the shared writer (and the sweep's reuse
    structure, when its mixtures had one)."""
    rows = table_rows(order, records)
    if rows:
        write_results(path, rows, reuse)
