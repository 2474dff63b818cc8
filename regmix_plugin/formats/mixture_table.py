"""The mixtures table (``mixtures.csv``): one row per mixture, the input of ``sweep`` and ``predict``.

    run_id,weight/arxiv,weight/github,weight/pile_cc
    mix-0001,0.25,0.05,0.70

``run_id`` is unique per row; one ``weight/<domain>`` column per domain (names as
:func:`regmix_plugin.weights.normalize_domain` gives them), each row summing to 1 within
:data:`regmix_plugin.weights.SUM_TOLERANCE`.

Staged proxies (``regmix sample --stages S``, for RegMix-D) put one column per domain *and stage* instead,
``weight/<domain>@<stage>`` with stages numbered 1..S, each stage's cells of a row summing to 1; the S stages
are equal slices of the run (stage ``k`` ends at ``k/S`` of its tokens)::

    run_id,weight/arxiv@1,weight/pile_cc@1,weight/arxiv@2,weight/pile_cc@2
    mix-0001,0.9,0.1,0.2,0.8

A file has plain or staged columns, never both. Readers of a staged file get :attr:`Mixtures.weights` = the
mean over stages (the whole run's mixture, what the epoch bound and a static ``regmix fit`` see) and the
stages in :attr:`Mixtures.stages`. A static file is a one-stage schedule. ``regmix sample`` writes it; the results table
(:mod:`regmix_plugin.formats.results`) extends it with metrics. The official RegMix mixture CSV
(:mod:`regmix_plugin.formats.official`) is accepted wherever mixtures are read. This module is the one reader
and writer of mixture rows.

Mixtures sampled with ``regmix sample --reuse`` record their reuse structure (the block of unchanged domains and
its fixed ratios, :class:`regmix_plugin.formats.reuse.ReuseStructure`) in a note line before the header, so it
is written and renamed in one piece with the rows::

    # reuse: {"block": {"code": 0.25, "prose": 0.75}, "decimals": 4, "free": ["web"], "source": "v1/mixture.yaml"}
    run_id,weight/code,weight/prose,weight/web

Every reader then refuses a row that breaks the block's ratios, naming the run; a file without the note reads
as before.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from regmix_plugin.formats.reuse import ReuseStructure
from regmix_plugin.formats.table import (
    MAX_LISTED,
    check_suffix,
    listed,
    read_ids,
    read_table,
    weight_matrix,
    write_rows,
)
from regmix_plugin.weights import normalize_domain, validate_weights

ID_COLUMN = "run_id"
WEIGHT_PREFIX = "weight/"
STAGE_MARK = "@"
REUSE_NOTE = "reuse"
_OFFICIAL_PREFIXES = ("train_the_pile_", "train_")
_STAGED = re.compile(r"^(.+)@([0-9]+)$")
#: One run's mixture: ``{domain: weight}`` (static), or the stages ``[{"weights": ..., "until_fraction": ...},
#: ..., {"weights": ...}]`` that MixtureData's ``schedule:`` takes (staged).
RunSpec = dict[str, float] | list[dict]


@dataclass
class Mixtures:
    """Mixture rows of a table, in file order: ids and a (rows x domains) weight matrix summing to 1 per row."""

    source: str
    id_column: str
    ids: list[str]
    domains: list[str]
    weights: np.ndarray
    """(rows x domains); for a staged file, the mean over its stages."""
    stages: np.ndarray | None = None
    """(rows x stages x domains) for a staged file (``weight/<domain>@<stage>`` columns), else None."""
    reuse: ReuseStructure | None = None
    """The block of unchanged domains the rows keep (``regmix sample --reuse``), or None."""

    def as_dict(self) -> dict[str, dict[str, float]]:
        """``{run_id: {domain: weight}}`` in file order (a staged run: its mean mixture)."""
        return {
            i: {d: float(w) for d, w in zip(self.domains, row, strict=True)}
            for i, row in zip(self.ids, self.weights, strict=True)
        }

    def as_runs(self) -> dict[str, RunSpec]:
        """``{run_id: RunSpec}`` in file order: the weights of a static file, the stage list of a staged one."""
        if self.stages is None:
            return dict(self.as_dict())
        return {i: stage_list([self._named(w) for w in st]) for i, st in zip(self.ids, self.stages, strict=True)}

    def _named(self, row: np.ndarray) -> dict[str, float]:
        return {d: float(w) for d, w in zip(self.domains, row, strict=True)}


def stage_list(weights: Sequence[Mapping[str, float]]) -> list[dict]:
    """S per-stage mixtures -> MixtureData's ``schedule:`` stages of equal length (stage k ends at k/S)."""
    n = len(weights)
    return [
        {"weights": dict(w), **({"until_fraction": (k + 1) / n} if k < n - 1 else {})} for k, w in enumerate(weights)
    ]


def split_run(spec: RunSpec) -> tuple[dict[str, float], list[dict] | None]:
    """A run's whole-run mixture (the mean over equal-length stages) and its stage list (None when static)."""
    if isinstance(spec, Mapping):
        return dict(spec), None
    stages = list(spec)
    domains = sorted({d for st in stages for d in st["weights"]})
    bounds = [0.0] + [float(st.get("until_fraction", 1.0)) for st in stages[:-1]] + [1.0]
    spans = [(b - a, st["weights"]) for a, b, st in zip(bounds[:-1], bounds[1:], stages, strict=True)]
    mean = {d: sum(span * float(w.get(d, 0.0)) for span, w in spans) for d in domains}
    return mean, stages


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
    columns, notes = read_table(path, flag)
    return mixtures_from_columns(columns, f"{flag} {path}", layout, known, known_from, notes)


def mixtures_from_columns(
    columns: dict[str, list],
    where: str,
    layout: str = "auto",
    known: Sequence[str] | None = None,
    known_from: str = "the model",
    notes: Mapping[str, object] | None = None,
) -> Mixtures:
    """The mixture rows of an already-read table (shared by the results and official readers), with the reuse
    structure of its ``notes`` (rows that break the block's ratios are refused)."""
    mix = _mixtures(columns, where, layout, known, known_from)
    if notes and REUSE_NOTE in notes:
        if mix.stages is not None:
            raise ValueError(f"{where}: a staged table cannot carry a reuse structure; drop its '# reuse:' line")
        mix.reuse = ReuseStructure.from_dict(notes[REUSE_NOTE], mix.domains, f"{where} '# {REUSE_NOTE}:' line")
        check_reuse(mix.reuse, mix.ids, mix.weights, where)
    return mix


def check_reuse(reuse: ReuseStructure, ids: Sequence[str], weights: np.ndarray, where: str) -> None:
    """Refuse rows that break the block's fixed ratios, naming the runs (a reuse sweep must keep them)."""
    broken = [i for i, bad in zip(ids, reuse.broken(weights), strict=True) if bad]
    if broken:
        block = ", ".join(f"{d} {r:.6g}" for d, r in reuse.ratios.items())
        raise ValueError(
            f"{where}: run(s) {listed(broken)} break the reuse block's fixed ratios ({block}, from "
            f"{reuse.source or 'the previous mixture'}): keep those ratios within the block, or drop the runs"
        )


def _mixtures(columns, where, layout, known, known_from) -> Mixtures:
    ours = any(c.startswith(WEIGHT_PREFIX) for c in columns) if layout == "auto" else layout == "ours"
    if ours:
        if ID_COLUMN not in columns:
            raise ValueError(f"{where} has '{WEIGHT_PREFIX}' columns but no {ID_COLUMN!r} column")
        id_column = ID_COLUMN
        weight_cols = {c: c[len(WEIGHT_PREFIX) :] for c in columns if c.startswith(WEIGHT_PREFIX)}
        staged = {c: _STAGED.match(raw) for c, raw in weight_cols.items()}
        if any(staged.values()):
            plain = [c for c, m in staged.items() if m is None]
            if plain:
                raise ValueError(
                    f"{where} mixes staged 'weight/<domain>@<stage>' columns with plain ones ({listed(plain)}); "
                    "a file is static or staged: drop one kind"
                )
            return _staged_mixtures(columns, where, staged, known, known_from)
    else:
        id_column = next(iter(columns))
        weight_cols = {c: strip_official(c) for c in columns if c != id_column}
    if not weight_cols:
        raise ValueError(
            f"{where} has no '{WEIGHT_PREFIX}<domain>' (or official) weight column; columns: {', '.join(columns)}"
        )
    named = _domain_columns(weight_cols, where)
    _check_known(named, where, known, known_from)
    ids = read_ids(columns[id_column], where)
    weights = weight_matrix(ids, id_column, {d: columns[c] for d, c in named.items()}, where, known)
    return Mixtures(where, id_column, ids, sorted(known) if known is not None else sorted(named), weights)


def _staged_mixtures(columns, where, staged, known, known_from) -> Mixtures:
    """The rows of a staged table: one weight matrix per stage, validated like a static one."""
    by_stage: dict[int, dict[str, str]] = {}
    for column, m in staged.items():
        by_stage.setdefault(int(m.group(2)), {})[column] = m.group(1)
    stages = sorted(by_stage)
    if stages != list(range(1, len(stages) + 1)):
        raise ValueError(f"{where}: stages {stages} must be numbered 1..S with none missing ('weight/<domain>@1', ...)")
    named = {k: _domain_columns(by_stage[k], where) for k in stages}
    differ = [k for k in stages if set(named[k]) != set(named[1])]
    if differ:
        raise ValueError(f"{where}: stage(s) {differ} do not have a column for every domain of stage 1; add them")
    _check_known(named[1], where, known, known_from)
    ids = read_ids(columns[ID_COLUMN], where)
    mats = np.stack(
        [
            weight_matrix(ids, ID_COLUMN, {d: columns[c] for d, c in named[k].items()}, f"{where} stage {k}", known)
            for k in stages
        ],
        1,
    )
    domains = sorted(known) if known is not None else sorted(named[1])
    return Mixtures(where, ID_COLUMN, ids, domains, mats.mean(1), mats)


def _domain_columns(weight_cols: Mapping[str, str], where: str) -> dict[str, str]:
    """``{column: raw domain}`` -> ``{domain: column}``, refusing two columns for one domain."""
    named: dict[str, str] = {}
    for column, raw in weight_cols.items():
        domain = normalize_domain(raw)
        if domain in named:
            raise ValueError(f"{where}: columns {named[domain]!r} and {column!r} both name domain {domain!r}")
        named[domain] = column
    return named


def _check_known(named: Mapping[str, str], where: str, known, known_from: str) -> None:
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


def strip_official(column: str) -> str:
    """The domain part of an official RegMix weight column: ``train_the_pile_pile_cc`` -> ``pile_cc``."""
    for prefix in _OFFICIAL_PREFIXES:
        if column.startswith(prefix):
            return column[len(prefix) :]
    return column


def write_mixtures(
    path: str | Path,
    mixtures: Mapping[str, Mapping[str, float]],
    domains: Sequence[str],
    stages: int = 1,
    reuse: ReuseStructure | None = None,
) -> None:
    """Atomically write ``{run_id: {domain: weight}}`` as ``run_id,weight/<domain>,...`` (domains left out: 0).

    With ``stages`` > 1 every value is a list of that many ``{domain: weight}`` (one per equal stage), written
    as ``weight/<domain>@<stage>`` columns. With ``reuse`` its record is the file's ``# reuse:`` note, and a
    row that breaks the block's ratios is refused before anything is written.
    """
    if reuse is not None:
        if stages > 1:
            raise ValueError(f"write_mixtures({str(path)!r}): a staged table cannot carry a reuse structure")
        order = list(reuse.domains)
        W = np.array([[float(w.get(d, 0.0)) for d in order] for w in mixtures.values()])
        check_reuse(reuse, list(mixtures), W, f"write_mixtures({str(path)!r})")
    if stages > 1:
        bad = [r for r, w in mixtures.items() if isinstance(w, Mapping) or len(w) != stages]
        if bad:
            raise ValueError(f"write_mixtures({str(path)!r}): run(s) {listed(bad)} do not have {stages} stages")
        for k in range(stages):  # each stage is a mixture of its own
            check_rows(
                path,
                [{ID_COLUMN: r, **{WEIGHT_PREFIX + d: w[k].get(d, 0.0) for d in domains}} for r, w in mixtures.items()],
                "write_mixtures",
            )
        names = [f"{WEIGHT_PREFIX}{d}{STAGE_MARK}{k}" for k in range(1, stages + 1) for d in domains]
        rows = [
            {ID_COLUMN: r, **dict(zip(names, (w[k].get(d, 0.0) for k in range(stages) for d in domains), strict=True))}
            for r, w in mixtures.items()
        ]
        write_rows(path, [ID_COLUMN] + names, rows)
        return
    rows = [{ID_COLUMN: r, **{WEIGHT_PREFIX + d: w.get(d, 0.0) for d in domains}} for r, w in mixtures.items()]
    check_rows(path, rows, "write_mixtures")
    notes = {REUSE_NOTE: reuse.to_dict()} if reuse is not None else None
    write_rows(path, [ID_COLUMN] + [WEIGHT_PREFIX + d for d in domains], rows, notes)


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
