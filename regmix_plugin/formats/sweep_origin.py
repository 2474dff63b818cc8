"""What an earlier sweep's runs are valid for, read from its ``sweep.json``, and the check ``regmix fit --also`` runs.

A sweep's runs are data for a *later* problem (a corpus with a domain added, dropped or refreshed) only where
nothing they measured has changed. ``regmix sweep`` records in ``sweep.json``:

- ``identity.tokenizer``: the manifest's tokenizer hash;
- ``config``: the proxy recipe every run trained with (the ``litgpt pretrain`` config, weights blank), and
  ``identity.eval.val_tokens``: how many validation tokens each domain was scored on;
- ``fingerprints``: one content fingerprint per domain of the corpus it trained on
  (:meth:`~regmix_plugin.formats.manifest.Manifest.fingerprints`; recorded from this version on).

An earlier run is valid for the new sweep when the tokenizer hash is the same, the *proxy recipe* is the same
(the config without the keys of :data:`NOT_RECIPE`: paths, seeds, the weights, worker counts, the checkpoint
interval; plus the scoring's ``val_tokens``), and the run gave zero weight to every domain that is changed or
new now while each domain it did train on is unchanged (same name and fingerprint). Its loss on a target column
counts only for a domain whose validation split is unchanged.

    regmix fit --results sweep_v2/results.csv --also sweep_v1 --target val_loss/prose --out model
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from regmix_plugin.formats.manifest import MANIFEST, read_manifest
from regmix_plugin.formats.results import LOSS_PREFIX, Results
from regmix_plugin.formats.reuse import compare_domains
from regmix_plugin.formats.sweep_records import DONE, SETUP_FILE, read_records, table_rows

#: Keys of a sweep's config that are not part of its proxy recipe: where things are (paths), seeds, the mixture
#: itself, and settings that change speed or bookkeeping only. Everything else must match for runs to be reused.
NOT_RECIPE = (
    "out_dir",
    "seed",
    "tokenizer_dir",
    "logger_name",
    "resume",
    "train.save_interval",
    "data.init_args.data_path",
    "data.init_args.weights",
    "data.init_args.schedule",
    "data.init_args.seed",
    "data.init_args.num_workers",
)


def proxy_recipe(config: dict, val_tokens: int | None) -> dict:
    """The part of a sweep's config that decides what a proxy's losses mean (see :data:`NOT_RECIPE`)."""
    out = copy.deepcopy(config)
    for key in NOT_RECIPE:
        *parents, last = key.split(".")
        node = out
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    out["eval.val_tokens"] = val_tokens
    return out


def recipe_differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys where two proxy recipes differ (a key missing on one side counts)."""
    keys = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            keys += recipe_differences(x, y, f"{prefix}{k}.")
        elif x != y:
            keys.append(f"{prefix}{k}")
    return keys


@dataclass
class SweepOrigin:
    """The set-up an earlier (or the current) sweep's runs were measured under."""

    path: Path
    tokenizer: str | None
    recipe: dict
    fingerprints: dict[str, str | None] | None
    fingerprint_note: str = ""
    """How the fingerprints were found when ``sweep.json`` predates them (from the unchanged corpus), else empty."""


def read_origin(sweep_dir: str | Path, flag: str) -> SweepOrigin:
    """A sweep directory's :class:`SweepOrigin`, from its ``sweep.json``.

    A sweep planned before fingerprints were recorded gets them from its corpus (``data_path``) when that
    manifest is byte-identical to the one the sweep hashed; otherwise ``fingerprints`` is None.
    """
    path = Path(sweep_dir) / SETUP_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{flag} {str(sweep_dir)!r} is not a sweep directory (no {SETUP_FILE}); pass the --out_dir of a "
            "`regmix sweep`"
        )
    raw = json.loads(path.read_text())
    identity = raw.get("identity") or {}
    recipe = proxy_recipe(raw.get("config") or {}, (identity.get("eval") or {}).get("val_tokens"))
    fingerprints, note = raw.get("fingerprints"), ""
    if fingerprints is None:
        fingerprints, note = _fingerprints_from_corpus(raw.get("data_path"), identity.get("manifest"))
    return SweepOrigin(Path(sweep_dir), identity.get("tokenizer"), recipe, fingerprints, note)


def _fingerprints_from_corpus(data_path: str | None, manifest_hash: str | None):
    import hashlib

    manifest = Path(data_path or "") / MANIFEST
    if not data_path or not manifest.is_file():
        return None, f"its corpus {data_path!r} is gone"
    if "sha256:" + hashlib.sha256(manifest.read_bytes()).hexdigest() != manifest_hash:
        return None, f"its corpus {data_path!r} was re-prepared since"
    return read_manifest(data_path).fingerprints(), f"fingerprints read from its unchanged corpus {data_path}"


@dataclass
class AlsoReport:
    """What ``--also`` took from each earlier sweep: the runs used and each refused run with its reason."""

    used: dict[str, list[str]] = field(default_factory=dict)
    refused: dict[str, dict[str, str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = list(self.notes)
        for sweep, ids in self.used.items():
            refused = self.refused.get(sweep, {})
            out.append(f"--also {sweep}: used {len(ids)} run(s), refused {len(refused)}")
            out += [f"  refused {run}: {why}" for run, why in refused.items()]
        return out

    def to_dict(self) -> dict:
        return {"used": self.used, "refused": self.refused, "notes": self.notes}


def add_earlier_runs(
    data: Results, columns: dict[str, float], current: SweepOrigin, also: list[str | Path]
) -> tuple[Results, AlsoReport]:
    """``data`` plus every valid run of the sweeps in ``also``, as rows over ``data``'s domains and metrics.

    Raises one ``ValueError`` (naming ``--also`` and the fix) when an earlier sweep has another tokenizer or
    proxy recipe; refuses single runs (reported, not raised) that trained on a changed, new or dropped domain,
    failed, or lack a target column's loss.
    """
    report = AlsoReport()
    problems, rows = [], []
    if current.fingerprints is None:
        raise ValueError(
            f"--also needs the fingerprints of the corpus --results was swept on, and {current.path / SETUP_FILE} has "
            f"none ({current.fingerprint_note}); re-run `regmix sweep` on it with this version to record them"
        )
    for old_dir in also:
        old = read_origin(old_dir, "--also")
        name = str(old_dir)
        if old.path.resolve() == current.path.resolve() or name in report.used:
            problems.append(f"--also {name} is the sweep of --results, or given twice: its runs would count twice")
            continue
        if old.tokenizer != current.tokenizer:
            problems.append(
                f"--also {name}: its corpus was tokenized with another tokenizer ({old.tokenizer} vs "
                f"{current.tokenizer} now); its losses are in other units. Drop --also {name}, or re-prepare the new "
                "corpus with the old tokenizer (regmix prepare --tokenizer_dir OLD) and sweep it again"
            )
            continue
        diff = recipe_differences(old.recipe, current.recipe)
        if diff:
            problems.append(
                f"--also {name}: its proxies used another proxy recipe (differs in: {', '.join(diff[:8])}); their "
                f"losses are not comparable. Drop --also {name}, or sweep the new corpus with the old recipe "
                f"(the config in {old.path / SETUP_FILE})"
            )
            continue
        if old.fingerprints is None:
            problems.append(
                f"--also {name}: its {SETUP_FILE} predates recorded fingerprints and {old.fingerprint_note}, so no run "
                "can be shown to have trained on unchanged domains only. Drop --also "
                f"{name} (sweeps record fingerprints from this version on)"
            )
            continue
        if old.fingerprint_note:
            report.notes.append(f"--also {name}: {old.fingerprint_note}")
        used, refused = _valid_runs(name, old, current, data, columns, rows)
        report.used[name], report.refused[name] = used, refused
    if problems:
        raise ValueError("regmix fit: nothing was fitted:\n  " + "\n  ".join(problems))
    if rows and data.reuse is not None:
        # Earlier runs do not keep the block's ratios (a random run of the old sweep varies them freely), so
        # they are no points of the reduced space: projecting them would credit the block's loss with whatever
        # ratios they had. The fit falls back to the full coordinates, where each run is exactly what it was.
        report.notes.append(
            "--also: the earlier runs do not keep the reuse block's ratios, so the fit uses the full coordinates "
            f"({len(data.domains)} domains) instead of the reduced ones; `optimize` then searches every domain"
        )
        data = replace(data, reuse=None)
    return _append(data, rows), report


def _valid_runs(name, old: SweepOrigin, current: SweepOrigin, data: Results, columns, rows: list) -> tuple:
    cmp = compare_domains(old.fingerprints, current.fingerprints)
    unchanged = set(cmp.unchanged) - set(cmp.by_name)  # a domain without a fingerprint cannot be shown unchanged
    bad_targets = [c for c in columns if _loss_domain(c) not in unchanged]
    used, refused = [], {}
    for run_id, rec in read_records(old.path, "--also").items():
        trained = sorted(d for d, w in rec.mixture.items() if w > 0)
        final = next((p["losses"] for p in rec.losses if p.get("final")), {})
        why = ""
        if rec.status != DONE:
            why = f"status {rec.status}"
        elif rec.schedule:
            why = "a staged run (its mixture changed during training)"
        elif any(d not in unchanged for d in trained):
            why = "trained on " + ", ".join(_what(d, cmp) for d in trained if d not in unchanged)
        elif bad_targets:
            why = "no comparable loss for " + ", ".join(_what(_loss_domain(c), cmp, c) for c in bad_targets)
        elif any(_loss_domain(c) not in final for c in columns):
            why = "its record has no final loss for " + ", ".join(c for c in columns if _loss_domain(c) not in final)
        if why:
            refused[run_id] = why
            continue
        used.append(run_id)
        row = table_rows([run_id], {run_id: rec})[0]  # the columns its results-table row would have
        metrics = {c: row.get(c, np.nan) if _loss_domain(c) in unchanged else np.nan for c in data.metrics}
        rows.append((f"{name}:{run_id}", [rec.mixture.get(d, 0.0) for d in data.domains], metrics, rec.tokens))
    return used, refused


def _loss_domain(column: str) -> str | None:
    """The domain of a ``val_loss/<domain>[@tokens]`` column (its validation split); None for another metric."""
    if not column.startswith(LOSS_PREFIX):
        return None
    return column[len(LOSS_PREFIX) :].partition("@")[0]


def _what(domain: str | None, cmp, column: str | None = None) -> str:
    label = column or str(domain)
    if domain in cmp.changed:
        return f"{label} (changed since)"
    if domain in cmp.dropped:
        return f"{label} (dropped since)"
    if domain in cmp.by_name:
        return f"{label} (no fingerprint to compare)"
    if domain in cmp.new:
        return f"{label} (new since)"
    return f"{label} (not a domain's validation loss)"


def _append(data: Results, rows: list) -> Results:
    if not rows:
        return data
    extra = {
        "ids": data.ids + [r[0] for r in rows],
        "weights": np.vstack([data.weights, np.array([r[1] for r in rows], float)]),
        "metrics": {c: np.concatenate([v, [r[2][c] for r in rows]]) for c, v in data.metrics.items()},
        "tokens": None
        if data.tokens is None
        else np.concatenate([data.tokens, [np.nan if r[3] is None else r[3] for r in rows]]),
        "stages": None,
    }
    return Results(**{**vars(data), **extra})
