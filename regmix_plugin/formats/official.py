"""The official RegMix CSV pair (sail-sg/regmix ``data/``), read into the results-table types.

* the mixture file: ``index,train_the_pile_arxiv,...``: the id in the first column, then one weight column per
  domain (``train_the_pile_``/``train_`` stripped, then normalised: ``train_the_pile_pile_cc`` -> ``pile_cc``);
* the loss file: ``index,metric/the_pile_pile_cc_val_loss,...``: joined to the mixtures on the id in its first
  column (never by position); each ``metric/the_pile_<domain>_val_loss`` column also answers to
  ``val_loss/<domain>``.

The published weights carry 3 decimals, so rows are accepted within that rounding and renormalised
(:func:`regmix_plugin.formats.table.weight_matrix`).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from regmix_plugin.formats.mixture_table import read_mixtures
from regmix_plugin.formats.results import LOSS_PREFIX, Results
from regmix_plugin.formats.table import listed, numeric, read_columns, read_ids
from regmix_plugin.weights import normalize_domain

_OFFICIAL_LOSS = re.compile(r"^metric/(?:the_pile_)?(.+)_val_loss$")


def read_regmix_csv(
    mixtures: str | Path, losses: str | Path, flags: tuple[str, str] = ("--mixtures", "--losses")
) -> Results:
    """Read the official RegMix pair: a mixture CSV and a loss CSV joined on the id in their first column."""
    mix = read_mixtures(mixtures, flags[0], layout="official")
    loss_cols = read_columns(losses, flags[1])
    where = f"{flags[1]} {losses}"
    id_column = next(iter(loss_cols))
    loss_ids = read_ids(loss_cols[id_column], where)
    position = {run_id: i for i, run_id in enumerate(loss_ids)}
    shared = [run_id for run_id in mix.ids if run_id in position]
    if not shared:
        raise ValueError(
            f"{flags[0]} {mixtures} and {where} share no run id (first column): e.g. {listed(mix.ids, 3)} vs "
            f"{listed(loss_ids, 3)}. Pass the loss file that belongs to these mixtures"
        )
    only_mix = [i for i in mix.ids if i not in position]
    only_loss = sorted(set(loss_ids) - set(mix.ids))
    ignored = [
        f"{len(ids)} only in {flag} ({listed(ids)})"
        for flag, ids in zip(flags, (only_mix, only_loss), strict=True)
        if ids
    ]
    if ignored:
        warnings.warn(
            f"joined the {len(shared)} run(s) present in both files; ignored " + " and ".join(ignored), stacklevel=2
        )
    rows = np.array([position[i] for i in shared])  # in the mixture file's order
    metrics = {c: v[rows] for c, v in numeric(loss_cols, [c for c in loss_cols if c != id_column]).items()}
    matches = {c: _OFFICIAL_LOSS.match(c) for c in metrics}
    aliases = {LOSS_PREFIX + normalize_domain(m.group(1)): c for c, m in matches.items() if m}
    mix.ids, mix.weights = shared, mix.weights[[i in position for i in mix.ids]]
    mix.source = f"{flags[0]} {mixtures} + {flags[1]} {losses}"
    return Results(**vars(mix), metrics=metrics, aliases=aliases)
