"""Shared low-level reading of the CSV/Parquet tables (mixtures, results, the official pair).

Not an artefact of its own: the table formats in this package (``mixtures``, ``results``, ``official``) read
columns, ids and weight matrices through these helpers so that every table is parsed and checked alike.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from regmix_plugin.weights import SUM_TOLERANCE, validate_weights

SUFFIXES = (".csv", ".parquet")
MAX_LISTED = 10
#: Largest sum error accepted from weights printed with few decimals (17 domains at 3 decimals need 0.0085).
MAX_ROUNDING = 0.01


def check_suffix(path: Path, flag: str) -> None:
    if path.suffix not in SUFFIXES:
        raise ValueError(f"{flag} {str(path)!r}: unknown table format {path.suffix!r}; use a .csv or .parquet path")


def read_columns(path: str | Path, flag: str) -> dict[str, list]:
    """Column name -> values (strings from CSV, typed values from Parquet), in file order."""
    return read_table(path, flag)[0]


def read_table(path: str | Path, flag: str) -> tuple[dict[str, list], dict[str, object]]:
    """:func:`read_columns` and the table's notes: ``{key: value}`` from leading ``# key: <json>`` lines of a CSV
    (or the Parquet schema metadata ``regmix.<key>``); ``{}`` for a plain table. A table with notes still reads
    in any CSV reader that skips ``#`` comment lines (``pandas.read_csv(comment="#")``)."""
    path = Path(path)
    check_suffix(path, flag)
    if not path.is_file():
        raise FileNotFoundError(f"{flag} {str(path)!r} does not exist")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        raw = {k.decode(): v for k, v in (table.schema.metadata or {}).items() if k.startswith(_META_PREFIX.encode())}
        notes = {k[len(_META_PREFIX) :]: _note(v.decode(), path, flag) for k, v in raw.items()}
        return table.to_pydict(), notes
    with open(path, newline="") as f:
        notes, first = {}, f.readline()
        while first.startswith(NOTE_MARK):
            key, _, value = first[len(NOTE_MARK) :].partition(":")
            notes[key.strip()] = _note(value, path, flag)
            first = f.readline()
        reader = csv.reader(itertools.chain([first] if first else [], f))
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
            f"{flag} {str(path)!r}: line(s) {listed(bad)} have a different number of cells than the header "
            f"({len(header)})"
        )
    return {name: [r[j] for r in rows] for j, name in enumerate(header)}, notes


#: A note line of a CSV table (before its header): ``# key: <json>``.
NOTE_MARK = "# "
_META_PREFIX = "regmix."


def _note(value: str, path: Path, flag: str) -> object:
    import json

    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raise ValueError(
            f"{flag} {str(path)!r}: the line before its header, {value.strip()[:60]!r}, is not a '# key: <json>' "
            "note; delete the line or write the file again with regmix"
        ) from None


def read_ids(values: list, where: str) -> list[str]:
    ids = [cell_id(v) for v in values]
    missing = [str(i + 1) for i, v in enumerate(ids) if not v]
    if missing:
        raise ValueError(f"{where}: data row(s) {listed(missing)} have no run id; give every row an id")
    dups = sorted(i for i, n in Counter(ids).items() if n > 1)
    if dups:
        raise ValueError(f"{where}: duplicate run id(s) {listed(dups)}; every run needs its own id")
    return ids


def cell_id(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return "" if value is None else str(value).strip()


def to_float(value: object) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        return math.nan
    return float(value)


def numeric(columns: dict[str, list], names: list[str]) -> dict[str, np.ndarray]:
    """The columns of ``names`` whose every cell is a number or empty; other columns are not metrics."""
    out = {}
    for name in names:
        try:
            out[name] = np.array([to_float(v) for v in columns[name]], dtype=float)
        except (TypeError, ValueError):
            continue
    return out


def decimals(cell: object) -> int | None:
    """Decimal places a CSV cell was printed with (None for typed values and exponent notation)."""
    if not isinstance(cell, str) or "e" in cell.lower():
        return None
    return len(cell.strip().partition(".")[2])


def weight_matrix(
    ids: list[str], id_column: str, values: dict[str, list], where: str, known: Sequence[str] | None = None
) -> np.ndarray:
    """Validate every row with ``domains.validate_weights`` and return the renormalised matrix.

    Weights printed with few decimals (the official CSVs use 3) cannot sum to exactly 1: each of ``n``
    cells may be off by half a unit in its last place, so the tolerance is widened to that bound when it
    exceeds ``SUM_TOLERANCE``, but never beyond ``MAX_ROUNDING`` (17 domains at 3 decimals need 0.0085).
    """
    known = sorted(values) if known is None else sorted(known)
    places = [d for vals in values.values() for d in map(decimals, vals) if d is not None]
    tolerance = SUM_TOLERANCE
    if places and max(places) < 12:
        tolerance = max(SUM_TOLERANCE, min(MAX_ROUNDING, len(values) * 0.5 * 10.0 ** -max(places)))
    problems, matrix = [], np.zeros((len(ids), len(known)))
    for r, run_id in enumerate(ids):
        row = {}
        for domain, vals in values.items():
            try:
                row[domain] = to_float(vals[r])
            except (TypeError, ValueError):
                row[domain] = vals[r]
        try:
            clean = validate_weights(row, known, key=f"{where} row {r + 1} ({id_column} {run_id})", tolerance=tolerance)
        except ValueError as e:
            problems.append(str(e).split(". Known domains:")[0])
            continue
        matrix[r] = [clean[d] for d in known]
    if problems:
        more = f"; and {len(problems) - MAX_LISTED} more row(s)" if len(problems) > MAX_LISTED else ""
        raise ValueError(
            "invalid mixture weights:\n  "
            + "\n  ".join(problems[:MAX_LISTED])
            + more
            + f"\nKnown domains: {', '.join(known)}. Fix these rows (weights >= 0, summing to 1) or drop them."
        )
    return matrix


def listed(items: Sequence, limit: int = MAX_LISTED) -> str:
    items = [str(i) for i in items]
    head = ", ".join(items[:limit])
    return head + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def write_rows(
    path: str | Path,
    columns: Sequence[str],
    rows: Sequence[Mapping[str, object]],
    notes: Mapping[str, object] | None = None,
) -> None:
    """Atomically write ``rows`` (mappings; absent keys are empty cells) as CSV or Parquet by ``path``'s suffix,
    with ``notes`` (JSON values) as :func:`read_table` reads them back: in the same file, so they are never apart."""
    import json

    from regmix_plugin.atomic import atomic_path, write_text

    path = Path(path)
    table = {c: [row.get(c) for row in rows] for c in columns}
    notes = {k: json.dumps(v, sort_keys=True) for k, v in (notes or {}).items()}
    if path.suffix == ".csv":
        buf = io.StringIO()
        buf.writelines(f"{NOTE_MARK}{k}: {v}\n" for k, v in notes.items())
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
            meta = {f"{_META_PREFIX}{k}": v for k, v in notes.items()}
            pq.write_table(pa.table(arrays).replace_schema_metadata(meta or None), tmp)


def _cell(value: object) -> str:
    # float(): numpy's float64 is a float whose repr is "np.float64(0.25)", which no reader takes as a number
    return repr(float(value)) if isinstance(value, float) else str(value)


def _parquet_values(values: list) -> list:
    present = [v for v in values if v is not None]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return values
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return [None if v is None else float(v) for v in values]
    return [None if v is None else str(v) for v in values]
