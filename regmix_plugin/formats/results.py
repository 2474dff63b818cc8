"""The proxy-results table: the one place its format is defined, read and written.

`regmix sweep` writes it, `regmix fit` reads it. One row per proxy run; a ``.csv`` or ``.parquet`` file
(chosen by the extension). Columns:

====================================  ====================================================================
``run_id``                            string, unique per row
``weight/<domain>``                   one per training domain (names as ``weights.normalize_domain``
                                      gives them); floats, each row sums to 1 within
                                      ``weights.SUM_TOLERANCE``
``val_loss/<domain>``                 validation loss on ``<domain>`` at the end of training
``val_loss/<domain>@<tokens>``        the same at an intermediate eval, ``<tokens>`` = integer tokens
                                      trained so far
any other name                        another metric (a downstream score, ...): a float column
``status``                            ``"done"`` or ``"failed"``; only ``done`` rows are fitted (a table
                                      without the column is all done)
``tokens``, ``wall_s``, ``seed``,     bookkeeping: never metrics, never features. ``tokens`` (tokens the run
``error``                             trained on) is kept as :attr:`Results.tokens`: the ``s`` of the end
                                      point of a trajectory (``regmix fit --regressor bimix``)
====================================  ====================================================================

An empty cell (CSV) or null (Parquet) is a missing value. Example::

    run_id,status,weight/arxiv,weight/pile_cc,val_loss/arxiv,val_loss/pile_cc,val_loss/pile_cc@1000000,tokens
    r0001,done,0.25,0.75,3.91,3.52,4.80,2000000

The official RegMix CSV pair is read into the same :class:`Results` by :mod:`regmix_plugin.formats.official`.
"""

from __future__ import annotations

import fnmatch
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from regmix_plugin.formats.mixture_table import (
    ID_COLUMN,
    REUSE_NOTE,
    WEIGHT_PREFIX,
    Mixtures,
    check_rows,
    mixtures_from_columns,
)
from regmix_plugin.formats.reuse import ReuseStructure
from regmix_plugin.formats.table import cell_id, listed, numeric, read_table, write_rows

LOSS_PREFIX = "val_loss/"
STATUS_COLUMN = "status"
TOKENS_COLUMN = "tokens"
DONE = "done"
BOOKKEEPING = ("status", "tokens", "wall_s", "seed", "error")


def finished_ids(path: str | Path, flag: str = "--results") -> set[str] | None:
    """The run ids of ``path``'s rows whose ``status`` is ``done``, or None when it has no status column (a
    mixtures file or the official table: every row is a finished run)."""
    columns = read_table(path, flag)[0]
    if STATUS_COLUMN not in columns or ID_COLUMN not in columns:
        return None
    return {cell_id(i) for i, st in zip(columns[ID_COLUMN], columns[STATUS_COLUMN], strict=True) if _done(st)}


def _done(status: object) -> bool:
    return str(status if status is not None else "").strip() == DONE


def loss_column(domain: str, tokens: int | None = None) -> str:
    """``val_loss/<domain>`` (end of training) or ``val_loss/<domain>@<tokens>`` (an intermediate eval point)."""
    return f"{LOSS_PREFIX}{domain}" + ("" if tokens is None else f"@{tokens}")


@dataclass
class Results(Mixtures):
    """Finished proxy runs: mixtures plus float metric columns (NaN where missing), aligned by row."""

    metrics: dict[str, np.ndarray] = field(default_factory=dict)
    #: Other names a metric answers to, e.g. ``val_loss/pile_cc`` -> ``metric/the_pile_pile_cc_val_loss``.
    aliases: dict[str, str] = field(default_factory=dict)
    #: Tokens each run trained on (the ``tokens`` column; NaN where empty), or None when the table has none.
    tokens: np.ndarray | None = None

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
            ids=[i for i, k in zip(self.ids, keep, strict=True) if k],
            domains=list(self.domains),
            weights=self.weights[keep],
            stages=None if self.stages is None else self.stages[keep],
            metrics={c: v[keep] for c, v in self.metrics.items()},
            aliases=dict(self.aliases),
            tokens=None if self.tokens is None else self.tokens[keep],
            reuse=self.reuse,
        )


def read_results(path: str | Path, flag: str = "--results") -> Results:
    """Read a proxy-results table (format in this module's docstring); only ``status == "done"`` rows are kept."""
    columns, notes = read_table(path, flag)
    where = f"{flag} {path}"
    if ID_COLUMN not in columns:
        raise ValueError(f"{where} has no {ID_COLUMN!r} column; columns: {', '.join(columns)}")
    if STATUS_COLUMN in columns:
        keep = [_done(s) for s in columns[STATUS_COLUMN]]
        skipped = [cell_id(i) for i, k in zip(columns[ID_COLUMN], keep, strict=True) if not k]
        if skipped:
            warnings.warn(
                f"{where}: skipped {len(skipped)} run(s) whose status is not 'done': {listed(skipped)}", stacklevel=2
            )
        columns = {c: [v for v, k in zip(vals, keep, strict=True) if k] for c, vals in columns.items()}
    if not columns[ID_COLUMN]:
        raise ValueError(f"{where} has no finished run (status 'done'); run `regmix sweep` until some finish")
    mix = mixtures_from_columns(columns, where, "ours", notes=notes)
    metric_cols = [c for c in columns if c != ID_COLUMN and not c.startswith(WEIGHT_PREFIX) and c not in BOOKKEEPING]
    tokens = numeric(columns, [TOKENS_COLUMN]).get(TOKENS_COLUMN) if TOKENS_COLUMN in columns else None
    if TOKENS_COLUMN in columns and tokens is None:
        raise ValueError(f"{where}: column {TOKENS_COLUMN!r} must hold numbers (tokens each run trained on)")
    return Results(**vars(mix), metrics=numeric(columns, metric_cols), aliases={}, tokens=tokens)


def write_results(path: str | Path, rows: Sequence[Mapping[str, object]], reuse: ReuseStructure | None = None) -> None:
    """Atomically write proxy results (one mapping per run, keys as in this module's docstring).

    Every row is checked first (``run_id`` present and unique, weights valid); nothing is written if any
    row is wrong. Columns come out as ``run_id``, ``status``, weights, metrics, bookkeeping. ``reuse`` (the
    sweep's mixtures carried one) becomes the table's ``# reuse:`` note, as in the mixtures table.
    """
    check_rows(path, rows, "write_results")
    names: list[str] = []
    for row in rows:
        names += [k for k in row if k not in names]
    write_rows(path, _column_order(names), rows, {REUSE_NOTE: reuse.to_dict()} if reuse is not None else None)


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
