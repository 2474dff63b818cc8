"""What a proxy run cost: the device it ran on, its peak GPU memory and its steady-state training throughput.

These go into every run record (:class:`regmix_plugin.formats.sweep_records.RunRecord`) so that packing several
proxies per GPU can be judged from measurements: peak memory is ``torch.cuda.max_memory_allocated`` over the
whole run (training and scoring; ``None`` on CPU), and throughput is read from the CSV logger's rolling
``device/items_per_sec`` (tokens per second over LitGPT's last 5 log points), whose windows start after the first
logged step, so compilation and start-up are not in it.
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
    """Median of the logged rolling tokens/s of a run (``None`` if it logged too few points for one window)."""
    rates = []
    for metrics in sorted(Path(work).glob("logs/**/metrics.csv")):
        with open(metrics, newline="") as f:
            for row in csv.DictReader(f):
                value = row.get(_RATE) or ""
                if value and math.isfinite(float(value)):
                    rates.append(float(value))
    return round(statistics.median(rates), 1) if rates else None
