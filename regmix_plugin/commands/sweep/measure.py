"""What a proxy run cost: the device it ran on, its peak GPU memory and its steady-state training throughput.

These go into every run record (:class:`regmix_plugin.formats.sweep_records.RunRecord`) so that packing several
proxies per GPU can be judged from measurements: peak memory is ``torch.cuda.max_memory_allocated`` over the
whole run (training and scoring; ``None`` on CPU), and throughput is read from the CSV logger's rolling
``device/items_per_sec`` (tokens per second over LitGPT's last 5 log points), whose windows start after the first
logged step, so compilation and start-up are not in it (short runs: see :func:`steady_tokens_per_s`).
"""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

_RATE = "device/items_per_sec"


@dataclass
class Usage:
    device: str
    peak_memory_bytes: int | None
    tokens_per_s: float | None


def start() -> None:
    """Reset the peak-memory counter of this process's GPU (no-op on CPU)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def finish(work: Path) -> Usage:
    """The usage of the run whose litgpt ``out_dir`` is ``work``, since :func:`start`."""
    import torch

    if torch.cuda.is_available():
        device, peak = torch.cuda.get_device_name(), int(torch.cuda.max_memory_allocated())
    else:
        device, peak = "cpu", None
    return Usage(device=device, peak_memory_bytes=peak, tokens_per_s=steady_tokens_per_s(work))


def steady_tokens_per_s(work: Path) -> float | None:
    """Median of the logged rolling tokens/s of a run.

    A run that logged fewer than the 5 points of one window falls back to the median over logged iterations
    after the first (which compiles) of tokens per iteration / ``iter_time``; that rate leaves out data-loading
    waits, so it is an upper bound. ``None`` if the run logged nothing usable.
    """
    rolling, single = [], []
    for metrics in sorted(Path(work).glob("logs/**/metrics.csv")):
        with open(metrics, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("iter")]
        for i, row in enumerate(rows):
            rolling += [float(row[_RATE])] if _finite(row.get(_RATE)) else []
            if i > 0 and _finite(row.get("iter_time")) and _finite(row.get("tokens")) and float(row["iter_time"]) > 0:
                single.append(float(row["tokens"]) / float(row["iter"]) / float(row["iter_time"]))
    rates = rolling or single
    return round(statistics.median(rates), 1) if rates else None


def _finite(value: str | None) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
