"""The mixtures table (``mixtures.csv``): one row per mixture, the input of ``sweep`` and ``predict``.

    run_id,weight/arxiv,weight/github,weight/pile_cc
    mix-0001,0.25,0.05,0.70

``run_id`` is unique per row; one ``weight/<domain>`` column per domain (names as
:func:`regmix_plugin.mixture.normalize_domain` gives them), each row summing to 1 within
:data:`regmix_plugin.mixture.SUM_TOLERANCE`. ``regmix sample`` writes it; the results table
(:mod:`regmix_plugin.formats.results`) extends it with metrics. The official RegMix mixture CSV
(:mod:`regmix_plugin.formats.official`) is accepted wherever mixtures are read. This module is the one reader
and writer of mixture rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from regmix_plugin.formats.table import (
    MAX_LISTED,
    check_suffix,
    listed,
    read_columns,
    read_ids,
    weight_matrix,
    write_rows,
)
from regmix_plugin.mixture import normalize_domain, validate_weights

ID_COLUMN = "run_id"
WEIGHT_PREFIX = "weight/"
_OFFICIAL_PREFIXES = ("train_the_pile_", "train_")


@dataclass
class Mixtures:
    """Mixture rows of a table, in file order: ids and a (rows x domains) weight matrix summing to 1 per row."""

    source: str
    id_column: str
    ids: list[str]
    domains: list[str]
    weights: np.ndarray

    def as_dict(self) -> dict[str, dict[str, float]]:
        """``{run_id: {domain: weight}}`` in file order."""
        return {
            i: {d: float(w) for d, w in zip(self.domains, row, strict=True)}
            for i, row in zip(self.ids, self.weights, strict=True)
        }


def read_mixtures(
    path: str | Path,
    flag: str = "--mixtures",
    known: Sequence[str] | None = None,
    layout: str = "auto",
    known_from: str = "the model",
) -> Mixtures:
    """Read mixtures in either layout: ours (``run_id``, ``weight/<domain>``) or the official RegMix CSV.

    With ``known`` (a corpus's or a model's domains) the file must have exactly one column per known domain:
    a missing column is refused (it would silently weigh 0) and so is one for an unknown domain, both in one
    message that says how to fix the file. ``layout`` is ``"auto"`` (ours if any ``weight/`` column exists),
    ``"ours"`` or ``"official"`` (first column the id, every other column ``train_the_pile_<domain>``).
    ``known_from`` names where ``known`` comes from in messages (``"the prepared corpus"``).
    """
    return mixtures_from_columns(read_columns(path, flag), f"{flag} {path}", layout, known, known_from)


def mixtures_from_columns(
    columns: dict[str, list],
    where: str,
    layout: str = "auto",
    known: Sequence[str] | None = None,
    known_from: str = "the model",
) -> Mixtures:
    """The mixture rows of an already-read table (shared by the results and official readers)."""
    ours = any(c.startswith(WEIGHT_PREFIX) for c in columns) if layout == "auto" else layout == "ours"
    if ours:
        if ID_COLUMN not in columns:
            raise ValueError(f"{where} has '{WEIGHT_PREFIX}' columns but no {ID_COLUMN!r} column")
        id_column = ID_COLUMN
        weight_cols = {c: c[len(WEIGHT_PREFIX) :] for c in columns if c.startswith(WEIGHT_PREFIX)}
    else:
        id_column = next(iter(columns))
        weight_cols = {c: strip_official(c) for c in columns if c != id_column}
    if not weight_cols:
        raise ValueError(f"{where} has no '{WEIGHT_PREFIX}<domain>' (or official) weight column; columns: "
                         f"{', '.join(columns)}")  # fmt: skip
    named: dict[str, str] = {}
    for column, raw in weight_cols.items():
        domain = normalize_domain(raw)
        if domain in named:
            raise ValueError(f"{where}: columns {named[domain]!r} and {column!r} both name domain {domain!r}")
        named[domain] = column
    if known is not None:
        missing, extra = sorted(set(known) - set(named)), sorted(set(named) - set(known))
        problems = []
        if missing:
            problems.append(
                f"missing column(s) for domain(s) {listed(missing)}: add {WEIGHT_PREFIX}<domain> columns (0 is fine)"
            )
        if extra:
            problems.append(
                f"column(s) for domain(s) {listed(extra)} that {known_from} does not have: drop "
                "them, or use one that has those domains"
            )
        if problems:
            raise ValueError(
                f"{where} does not fit {known_from} (domains: {', '.join(sorted(known))}):\n  " + "\n  ".join(problems)
            )
    ids = read_ids(columns[id_column], where)
    weights = weight_matrix(ids, id_column, {d: columns[c] for d, c in named.items()}, where, known)
    return Mixtures(where, id_column, ids, sorted(known) if known is not None else sorted(named), weights)


def strip_official(column: str) -> str:
    """The domain part of an official RegMix weight column: ``train_the_pile_pile_cc`` -> ``pile_cc``."""
    for prefix in _OFFICIAL_PREFIXES:
        if column.startswith(prefix):
            return column[len(prefix) :]
    return column


def write_mixtures(path: str | Path, mixtures: Mapping[str, Mapping[str, float]], domains: Sequence[str]) -> None:
    """Atomically write ``{run_id: {domain: weight}}`` as ``run_id,weight/<domain>,...`` (domains left out: 0)."""
    rows = [{ID_COLUMN: r, **{WEIGHT_PREFIX + d: w.get(d, 0.0) for d in domains}} for r, w in mixtures.items()]
    check_rows(path, rows, "write_mixtures")
    write_rows(path, [ID_COLUMN] + [WEIGHT_PREFIX + d for d in domains], rows)


def check_rows(path: str | Path, rows: Sequence[Mapping[str, object]], writer: str) -> None:
    """Refuse rows that no reader would accept (before anything is written): ids present and unique, weights valid."""
    path = Path(path)
    check_suffix(path, f"{writer}(path)")
    problems = []
    if not rows:
        problems.append("no rows")
    ids = [str(r.get(ID_COLUMN, "") or "") for r in rows]
    if any(not i for i in ids):
        problems.append(f"{ids.count('')} row(s) without {ID_COLUMN!r}")
    dups = sorted(i for i, n in Counter(ids).items() if n > 1 and i)
    if dups:
        problems.append(f"duplicate {ID_COLUMN}(s) {listed(dups)}")
    names = {k for row in rows for k in row}
    domains = [normalize_domain(c[len(WEIGHT_PREFIX) :]) for c in names if c.startswith(WEIGHT_PREFIX)]
    for run_id, row in zip(ids, rows, strict=True):
        w = {normalize_domain(k[len(WEIGHT_PREFIX) :]): v for k, v in row.items() if k.startswith(WEIGHT_PREFIX)}
        try:
            validate_weights(w, domains, key=f"run {run_id!r} weights")
        except ValueError as e:
            problems.append(str(e))
    if problems:
        raise ValueError(f"{writer}({str(path)!r}): " + "; ".join(problems[:MAX_LISTED]))
