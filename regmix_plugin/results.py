"""The proxy-results table: the one place its format is defined, read and written.

`regmix sweep` writes it, `regmix fit` reads it. One row per proxy run; a ``.csv`` or ``.parquet`` file
(chosen by the extension). Columns:

====================================  ====================================================================
``run_id``                            string, unique per row
``weight/<domain>``                   one per training domain (names as ``domains.normalize_domain``
                                      gives them); floats, each row sums to 1 within
                                      ``domains.SUM_TOLERANCE``
``val_loss/<domain>``                 validation loss on ``<domain>`` at the end of training
``val_loss/<domain>@<tokens>``        the same at an intermediate eval, ``<tokens>`` = integer tokens
                                      trained so far
any other name                        another metric (a downstream score, ...): a float column
``status``                            ``"done"`` or ``"failed"``; only ``done`` rows are fitted (a table
                                      without the column is all done)
``tokens``, ``wall_s``, ``seed``,     bookkeeping: never metrics, never features
``error``
====================================  ====================================================================

An empty cell (CSV) or null (Parquet) is a missing value. Example::

    run_id,status,weight/arxiv,weight/pile_cc,val_loss/arxiv,val_loss/pile_cc,val_loss/pile_cc@1000000,tokens
    r0001,done,0.25,0.75,3.91,3.52,4.80,2000000

The official RegMix CSV pair (``index,train_the_pile_arxiv,...`` and
``index,metric/the_pile_pile_cc_val_loss,...``) is read by :func:`read_regmix_csv`: joined on the id in
each file's first column, domains named by stripping ``train_the_pile_``/``train_`` and normalising, and
each ``metric/the_pile_<domain>_val_loss`` column also answering to ``val_loss/<domain>``.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import math
import re
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from regmix_plugin.atomic import atomic_path, write_text
from regmix_plugin.domains import SUM_TOLERANCE, normalize_domain, validate_weights

ID_COLUMN = "run_id"
WEIGHT_PREFIX = "weight/"
LOSS_PREFIX = "val_loss/"
STATUS_COLUMN = "status"
DONE = "done"
BOOKKEEPING = ("status", "tokens", "wall_s", "seed", "error")
SUFFIXES = (".csv", ".parquet")
_OFFICIAL_PREFIXES = ("train_the_pile_", "train_")
_OFFICIAL_LOSS = re.compile(r"^metric/(?:the_pile_)?(.+)_val_loss$")
_MAX_LISTED = 10
_MAX_ROUNDING = 0.01


@dataclass
class Mixtures:
    """Mixture rows of a table, in file order: ids and a (rows x domains) weight matrix summing to 1 per row."""

    source: str
    id_column: str
    ids: list[str]
    domains: list[str]
    weights: np.ndarray


@dataclass
class Results(Mixtures):
    """Finished proxy runs: mixtures plus float metric columns (NaN where missing), aligned by row."""

    metrics: dict[str, np.ndarray]
    #: Other names a metric answers to, e.g. ``val_loss/pile_cc`` -> ``metric/the_pile_pile_cc_val_loss``.
    aliases: dict[str, str]

    def metric_names(self) -> list[str]:
        """Every name ``--target`` accepts: the columns and their aliases."""
        return sorted(set(self.metrics) | set(self.aliases))

    def resolve_target(self, target: str | Mapping[str, float], flag: str = "--target") -> dict[str, float]:
        """Turn a target spec into ``{metric column: weight}``.

        ``target`` is a column name, a glob (``val_loss/*``: the mean of the matching columns; ``@<tokens>``
        columns match only a pattern containing ``@``) or a mapping ``{name or glob: weight}`` whose weighted
        sum is the target.
        """
        spec = {target: 1.0} if isinstance(target, str) else dict(target)
        problems, resolved = [], {}
        if not spec:
            problems.append("is empty")
        for pattern, weight in spec.items():
            if not isinstance(weight, (int, float)) or not math.isfinite(weight):
                problems.append(f"weight of {pattern!r} is {weight!r}, not a finite number")
                continue
            columns = self._match(str(pattern))
            if not columns:
                problems.append(f"no metric column matches {pattern!r}")
            for column in columns:
                resolved[column] = resolved.get(column, 0.0) + float(weight) / len(columns)
        if not problems and not any(resolved.values()):
            problems.append("all weights are 0")
        if problems:
            raise ValueError(
                f"{flag}: " + "; ".join(problems) + f" in {self.source}. Available: {', '.join(self.metric_names())}"
            )
        return resolved

    def _match(self, pattern: str) -> list[str]:
        if pattern in self.metrics:
            return [pattern]
        if pattern in self.aliases:
            return [self.aliases[pattern]]
        if not any(c in pattern for c in "*?["):
            return []
        names = [n for n in self.metric_names() if fnmatch.fnmatchcase(n, pattern) and ("@" not in n or "@" in pattern)]
        return sorted({self.aliases.get(n, n) for n in names})

    def target_values(self, columns: Mapping[str, float]) -> np.ndarray:
        """The weighted sum of metric columns per row; NaN or inf wherever a used column is."""
        return sum(w * self.metrics[c] for c, w in columns.items())

    def subset(self, keep: np.ndarray) -> Results:
        """The rows where ``keep`` is true."""
        keep = np.asarray(keep, bool)
        return Results(
            source=self.source,
            id_column=self.id_column,
            ids=[i for i, k in zip(self.ids, keep) if k],
            domains=list(self.domains),
            weights=self.weights[keep],
            metrics={c: v[keep] for c, v in self.metrics.items()},
            aliases=dict(self.aliases),
        )


def read_results(path: str | Path, flag: str = "--results") -> Results:
    """Read a proxy-results table (format in this module's docstring); only ``status == "done"`` rows are kept."""
    columns = _read_columns(path, flag)
    where = f"{flag} {path}"
    if ID_COLUMN not in columns:
        raise ValueError(f"{where} has no {ID_COLUMN!r} column; columns: {', '.join(columns)}")
    if STATUS_COLUMN in columns:
        keep = [str(s if s is not None else "").strip() == DONE for s in columns[STATUS_COLUMN]]
        skipped = [_id(i) for i, k in zip(columns[ID_COLUMN], keep) if not k]
        if skipped:
            warnings.warn(f"{where}: skipped {len(skipped)} run(s) whose status is not 'done': {_listed(skipped)}",
                          stacklevel=2)  # fmt: skip
        columns = {c: [v for v, k in zip(vals, keep) if k] for c, vals in columns.items()}
    if not columns[ID_COLUMN]:
        raise ValueError(f"{where} has no finished run (status 'done'); run `regmix sweep` until some finish")
    mix = _mixtures(columns, where, "ours")
    metric_cols = [c for c in columns if c != ID_COLUMN and not c.startswith(WEIGHT_PREFIX) and c not in BOOKKEEPING]
    return Results(**vars(mix), metrics=_numeric(columns, metric_cols), aliases={})


def read_regmix_csv(
    mixtures: str | Path, losses: str | Path, flags: tuple[str, str] = ("--mixtures", "--losses")
) -> Results:
    """Read the official RegMix pair: a mixture CSV and a loss CSV joined on the id in their first column."""
    mix = read_mixtures(mixtures, flags[0], layout="official")
    loss_cols = _read_columns(losses, flags[1])
    where = f"{flags[1]} {losses}"
    id_column = next(iter(loss_cols))
    loss_ids = _ids(loss_cols[id_column], where)
    position = {run_id: i for i, run_id in enumerate(loss_ids)}
    shared = [run_id for run_id in mix.ids if run_id in position]
    if not shared:
        raise ValueError(
            f"{flags[0]} {mixtures} and {where} share no run id (first column): e.g. {_listed(mix.ids, 3)} vs "
            f"{_listed(loss_ids, 3)}. Pass the loss file that belongs to these mixtures"
        )
    only_mix = [i for i in mix.ids if i not in position]
    only_loss = sorted(set(loss_ids) - set(mix.ids))
    ignored = [f"{len(ids)} only in {flag} ({_listed(ids)})" for flag, ids in zip(flags, (only_mix, only_loss)) if ids]
    if ignored:
        warnings.warn(f"joined the {len(shared)} run(s) present in both files; ignored " + " and ".join(ignored),
                      stacklevel=2)  # fmt: skip
    rows = np.array([position[i] for i in shared])  # in the mixture file's order
    metrics = {c: v[rows] for c, v in _numeric(loss_cols, [c for c in loss_cols if c != id_column]).items()}
    matches = {c: _OFFICIAL_LOSS.match(c) for c in metrics}
    aliases = {LOSS_PREFIX + normalize_domain(m.group(1)): c for c, m in matches.items() if m}
    mix.ids, mix.weights = shared, mix.weights[[i in position for i in mix.ids]]
    mix.source = f"{flags[0]} {mixtures} + {flags[1]} {losses}"
    return Results(**vars(mix), metrics=metrics, aliases=aliases)


def read_mixtures(
    path: str | Path, flag: str = "--mixtures", known: Sequence[str] | None = None, layout: str = "auto"
) -> Mixtures:
    """Read mixtures in either layout: this module's (``run_id``, ``weight/<domain>``) or the official CSV.

    With ``known`` (a model's domains) every row is checked against those domains: unknown ones are an error,
    missing ones weigh 0. ``layout`` is ``"auto"`` (ours if any ``weight/`` column exists), ``"ours"`` or
    ``"official"`` (first column the id, every other column ``train_the_pile_<domain>``).
    """
    return _mixtures(_read_columns(path, flag), f"{flag} {path}", layout, known)


def _mixtures(columns: dict[str, list], where: str, layout: str, known: Sequence[str] | None = None) -> Mixtures:
    ours = any(c.startswith(WEIGHT_PREFIX) for c in columns) if layout == "auto" else layout == "ours"
    if ours:
        if ID_COLUMN not in columns:
            raise ValueError(f"{where} has '{WEIGHT_PREFIX}' columns but no {ID_COLUMN!r} column")
        id_column = ID_COLUMN
        weight_cols = {c: c[len(WEIGHT_PREFIX) :] for c in columns if c.startswith(WEIGHT_PREFIX)}
    else:
        id_column = next(iter(columns))
        weight_cols = {c: _strip_official(c) for c in columns if c != id_column}
    if not weight_cols:
        raise ValueError(f"{where} has no '{WEIGHT_PREFIX}<domain>' (or official) weight column; columns: "
                         f"{', '.join(columns)}")  # fmt: skip
    named: dict[str, str] = {}
    for column, raw in weight_cols.items():
        domain = normalize_domain(raw)
        if domain in named:
            raise ValueError(f"{where}: columns {named[domain]!r} and {column!r} both name domain {domain!r}")
        named[domain] = column
    ids = _ids(columns[id_column], where)
    weights = _weight_matrix(ids, id_column, {d: columns[c] for d, c in named.items()}, where, known)
    return Mixtures(where, id_column, ids, sorted(known) if known is not None else sorted(named), weights)


def write_results(path: str | Path, rows: Sequence[Mapping[str, object]]) -> None:
    """Atomically write proxy results (one mapping per run, keys as in this module's docstring).

    Every row is checked first (``run_id`` present and unique, weights valid); nothing is written if any
    row is wrong. Columns come out as ``run_id``, ``status``, weights, metrics, bookkeeping.
    """
    path = Path(path)
    _check_suffix(path, "write_results(path)")
    problems = []
    if not rows:
        problems.append("no rows")
    ids = [str(r.get(ID_COLUMN, "") or "") for r in rows]
    if any(not i for i in ids):
        problems.append(f"{ids.count('')} row(s) without {ID_COLUMN!r}")
    dups = sorted(i for i, n in Counter(ids).items() if n > 1 and i)
    if dups:
        problems.append(f"duplicate {ID_COLUMN}(s) {_listed(dups)}")
    names: list[str] = []
    for row in rows:
        names += [k for k in row if k not in names]
    domains = [normalize_domain(c[len(WEIGHT_PREFIX) :]) for c in names if c.startswith(WEIGHT_PREFIX)]
    for run_id, row in zip(ids, rows):
        w = {normalize_domain(k[len(WEIGHT_PREFIX) :]): v for k, v in row.items() if k.startswith(WEIGHT_PREFIX)}
        try:
            validate_weights(w, domains, key=f"run {run_id!r} weights")
        except ValueError as e:
            problems.append(str(e))
    if problems:
        raise ValueError(f"write_results({str(path)!r}): " + "; ".join(problems[:_MAX_LISTED]))
    columns = _column_order(names)
    table = {c: [row.get(c) for row in rows] for c in columns}
    if path.suffix == ".csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for i in range(len(rows)):
            writer.writerow(["" if table[c][i] is None else _cell(table[c][i]) for c in columns])
        write_text(path, buf.getvalue())
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        arrays = {c: pa.array(_parquet_values(vals)) for c, vals in table.items()}
        with atomic_path(path, suffix=".parquet") as tmp:
            pq.write_table(pa.table(arrays), tmp)


def _column_order(names: list[str]) -> list[str]:
    def key(c: str) -> tuple:
        if c == ID_COLUMN:
            return (0,)
        if c == STATUS_COLUMN:
            return (1,)
        if c.startswith(WEIGHT_PREFIX):
            return (2, c)
        if c in BOOKKEEPING:
            return (5, BOOKKEEPING.index(c))
        if c.startswith(LOSS_PREFIX):
            base, _, tokens = c.partition("@")
            return (3, base, int(tokens) if tokens.isdigit() else -1)
        return (4, c)

    return sorted(names, key=key)


def _cell(value: object) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _parquet_values(values: list) -> list:
    present = [v for v in values if v is not None]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return values
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return [None if v is None else float(v) for v in values]
    return [None if v is None else str(v) for v in values]


def _check_suffix(path: Path, flag: str) -> None:
    if path.suffix not in SUFFIXES:
        raise ValueError(f"{flag} {str(path)!r}: unknown table format {path.suffix!r}; use a .csv or .parquet path")


def _read_columns(path: str | Path, flag: str) -> dict[str, list]:
    """Column name -> values (strings from CSV, typed values from Parquet), in file order."""
    path = Path(path)
    _check_suffix(path, flag)
    if not path.is_file():
        raise FileNotFoundError(f"{flag} {str(path)!r} does not exist")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pydict()
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header:
            raise ValueError(f"{flag} {str(path)!r} is empty; it needs a header row")
        rows = [r for r in reader if r]
    dups = sorted(c for c, n in Counter(header).items() if n > 1)
    if dups:
        raise ValueError(f"{flag} {str(path)!r} repeats column(s) {', '.join(dups)}; each column name must be unique")
    bad = [i + 2 for i, r in enumerate(rows) if len(r) != len(header)]
    if bad:
        raise ValueError(
            f"{flag} {str(path)!r}: line(s) {_listed(bad)} have a different number of cells than the header "
            f"({len(header)})"
        )
    return {name: [r[j] for r in rows] for j, name in enumerate(header)}


def _ids(values: list, where: str) -> list[str]:
    ids = [_id(v) for v in values]
    missing = [str(i + 1) for i, v in enumerate(ids) if not v]
    if missing:
        raise ValueError(f"{where}: data row(s) {_listed(missing)} have no run id; give every row an id")
    dups = sorted(i for i, n in Counter(ids).items() if n > 1)
    if dups:
        raise ValueError(f"{where}: duplicate run id(s) {_listed(dups)}; every run needs its own id")
    return ids


def _id(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return "" if value is None else str(value).strip()


def _strip_official(column: str) -> str:
    for prefix in _OFFICIAL_PREFIXES:
        if column.startswith(prefix):
            return column[len(prefix) :]
    return column


def _to_float(value: object) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        return math.nan
    return float(value)


def _numeric(columns: dict[str, list], names: list[str]) -> dict[str, np.ndarray]:
    """The columns of ``names`` whose every cell is a number or empty; other columns are not metrics."""
    out = {}
    for name in names:
        try:
            out[name] = np.array([_to_float(v) for v in columns[name]], dtype=float)
        except (TypeError, ValueError):
            continue
    return out


def _decimals(cell: object) -> int | None:
    """Decimal places a CSV cell was printed with (None for typed values and exponent notation)."""
    if not isinstance(cell, str) or "e" in cell.lower():
        return None
    return len(cell.strip().partition(".")[2])


def _weight_matrix(
    ids: list[str], id_column: str, values: dict[str, list], where: str, known: Sequence[str] | None = None
) -> np.ndarray:
    """Validate every row with ``domains.validate_weights`` and return the renormalised matrix.

    Weights printed with few decimals (the official CSVs use 3) cannot sum to exactly 1: each of ``n``
    cells may be off by half a unit in its last place, so the tolerance is widened to that bound when it
    exceeds ``SUM_TOLERANCE``, but never beyond ``_MAX_ROUNDING`` (17 domains at 3 decimals need 0.0085).
    """
    known = sorted(values) if known is None else sorted(known)
    places = [d for vals in values.values() for d in map(_decimals, vals) if d is not None]
    tolerance = SUM_TOLERANCE
    if places and max(places) < 12:
        tolerance = max(SUM_TOLERANCE, min(_MAX_ROUNDING, len(values) * 0.5 * 10.0 ** -max(places)))
    problems, matrix = [], np.zeros((len(ids), len(known)))
    for r, run_id in enumerate(ids):
        row = {}
        for domain, vals in values.items():
            try:
                row[domain] = _to_float(vals[r])
            except (TypeError, ValueError):
                row[domain] = vals[r]
        try:
            clean = validate_weights(row, known, key=f"{where} row {r + 1} ({id_column} {run_id})", tolerance=tolerance)
        except ValueError as e:
            problems.append(str(e).split(". Known domains:")[0])
            continue
        matrix[r] = [clean[d] for d in known]
    if problems:
        more = f"; and {len(problems) - _MAX_LISTED} more row(s)" if len(problems) > _MAX_LISTED else ""
        raise ValueError(
            "invalid mixture weights:\n  " + "\n  ".join(problems[:_MAX_LISTED]) + more
            + f"\nKnown domains: {', '.join(known)}. Fix these rows (weights >= 0, summing to 1) or drop them."
        )
    return matrix


def _listed(items: Sequence, limit: int = _MAX_LISTED) -> str:
    items = [str(i) for i in items]
    head = ", ".join(items[:limit])
    return head + (f", ... ({len(items)} in all)" if len(items) > limit else "")
