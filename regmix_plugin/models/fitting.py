"""Fitting a regressor on proxy results, with K-fold CV, into a model directory: the engine of ``regmix fit``.

:func:`fit_model` is ``regmix fit`` (:mod:`regmix_plugin.commands.fit` is its CLI, with the arguments' description)
and the fit step of the active sweep loop (:mod:`regmix_plugin.commands.sweep.active`), which refits every round.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from regmix_plugin.atomic import write_json, write_text
from regmix_plugin.formats.model_dir import LAW_KINDS, MODEL_FILE, MODEL_FORMAT, model_dir_writer
from regmix_plugin.formats.official import read_regmix_csv
from regmix_plugin.formats.results import LOSS_PREFIX, Results, read_results
from regmix_plugin.formats.reuse import BLOCK

AUTO_ORDER = ("linear", "gp", "lightgbm", "mixing_law", "bimix", "ensemble")  # ties go to the simpler model
ENSEMBLE_MEMBERS = ("gp", "lightgbm", "mixing_law", "bimix")


def fit_model(
    results: Path | None = None,
    mixtures: Path | None = None,
    losses: Path | None = None,
    target: dict[str, float] | str = "val_loss/*",
    regressor: str = "auto",
    out: Path = Path("out/regmix/model"),
    cv_folds: int = 5,
    seed: int = 0,
    horizon_tokens: float | None = None,
    min_tokens: float = 0.0,
    bimix_proportions: str = "own",
    also: list[Path] | Path | None = None,
) -> dict:
    """Fit, cross-validate and write the model directory ``out``; return its ``model.json`` contents.

    The arguments are ``regmix fit``'s (:func:`regmix_plugin.commands.fit.fit`).
    """
    data, source = _load_training(results, mixtures, losses)
    columns = data.resolve_target(target)
    if also:  # before any reduction: earlier runs are full mixtures, and with them the fit stays in full coordinates
        also = [also] if isinstance(also, (str, Path)) else list(also)
        data, source["also"] = _add_earlier(data, columns, results, also)
    full_domains, reuse = data.domains, data.reuse
    if reuse is not None:  # fewer dimensions: the block's total and the free domains
        if regressor in LAW_KINDS:
            raise ValueError(
                f"--regressor {regressor}: a mixing law is written over every domain's own weight; {data.source} "
                "was sampled with --reuse (its rows keep a block's ratios), so fit linear, gp or lightgbm on it"
            )
        data = replace(data, domains=reuse.coordinates, weights=reuse.reduce(data.weights))
        print(
            f"fitting in the reduced coordinates of {data.source}: {', '.join(reuse.coordinates)} ({BLOCK} = "
            + " + ".join(reuse.block)
            + ")"
        )
    from regmix_plugin.models.regressors import cv_fold_count

    data, y = _finite_rows(data, columns)
    cv_folds = cv_fold_count(len(y), cv_folds, data.source)
    folds = make_folds(len(y), cv_folds, seed)
    if regressor == "auto":
        unfed = _unfeedable(data, columns)
        names = tuple(n for n in AUTO_ORDER if n not in unfed)
    else:
        names = (regressor,)
    law_args = {"horizon_tokens": horizon_tokens, "min_tokens": min_tokens, "proportions": bimix_proportions}
    candidates = {n: _candidate(n, data, columns, y, seed, **law_args) for n in names}
    scores, fold_models = {}, {}
    for n, c in candidates.items():  # the ensemble comes last in AUTO_ORDER: its members' fold fits are done
        c = _with_fold_fits(c, folds, fold_models) if n == "ensemble" else c
        scores[n] = cross_validate(c.estimator, c.X, y, folds, c.train_data, fold_models.setdefault(n, []))
    chosen = max(names, key=lambda n: (_nan_to(scores[n]["mean_spearman"], -2.0), -names.index(n)))
    best = candidates[chosen]
    model = best.estimator.fit(*best.train_data(np.arange(len(y))))
    interactions = _interactions(data, columns, y, seed)
    law = _law_report(chosen, model, best, data, columns, seed, min_tokens)
    cv = {
        "folds": cv_folds,
        "leave_one_out": cv_folds == len(y),
        "seed": seed,
        "n_runs": len(y),
        "selection": "mean fold Spearman on the training runs" if regressor == "auto" else "given",
        "chosen": chosen,
        "chosen_settings": model.settings(),
        "candidates": {n: {k: v for k, v in s.items() if k != "oof"} for n, s in scores.items()},
        **({"law": law} if law else {}),
    }
    meta = {
        "format_version": MODEL_FORMAT,
        "regressor": chosen,
        "settings": model.settings(),
        "domains": full_domains,
        **({"features": reuse.coordinates, "reuse": reuse.to_dict()} if reuse is not None else {}),
        "target": columns,
        "target_spec": target,
        "n_runs": len(y),
        "run_mean_mixture": dict(zip(full_domains, _full(reuse, data.weights.mean(0)).tolist(), strict=True)),
        "cv_spearman": scores[chosen]["mean_spearman"],
        "cv_rmse": float(np.sqrt(scores[chosen]["mean_mse"])),
        **({"law": law} if law else {}),
        "source": source,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "regmix_plugin_version": _version(),
    }
    from regmix_plugin import plots

    with model_dir_writer(out) as tmp:
        model.save(tmp)
        write_json(tmp / "cv.json", cv)
        oof = scores[chosen]["oof"]
        rows = [f"{data.id_column},fold,true,prediction"] + [
            f"{i},{f},{t!r},{p!r}"
            for i, f, t, p in zip(data.ids, _fold_of(folds, len(y)), y.tolist(), oof.tolist(), strict=True)
        ]
        write_text(tmp / "cv_predictions.csv", "\n".join(rows) + "\n")
        write_text(tmp / "interactions.csv", _interactions_csv(interactions, data.domains))
        label = target if isinstance(target, str) else _target_label(columns)
        plots.cv_scatter(tmp / "cv_predicted_vs_true.png", y, oof, label, chosen, cv_folds, meta["cv_spearman"])
        heat = {k: v for k, v in interactions.items() if k != "target"}
        if heat:
            plots.interaction_heatmap(tmp / "interactions.png", heat, data.domains)
        write_json(tmp / MODEL_FILE, meta)
    scheme = "leave-one-out" if cv_folds == len(y) else f"{cv_folds}-fold"
    extra = ""
    if law and isinstance(law.get("extrapolation"), dict):
        e = law["extrapolation"]
        extra = (
            f"; extrapolation from {e['fitted_up_to_tokens']:.0f} to {e['predicted_tokens']:.0f} tokens: mean "
            f"relative error {e['mean_relative_error']:.4f} (flat forecast {e['naive_mean_relative_error']:.4f})"
        )
    print(
        f"fitted {chosen} on {len(y)} runs; {scheme} CV Spearman {scores[chosen]['mean_spearman']:.4f}"
        f"{extra}; wrote {out}"
    )
    return meta


def make_folds(n: int, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled K-fold split of ``n`` training runs as (train indices, held-out indices) pairs (``k == n``:
    leave-one-out)."""
    from sklearn.model_selection import KFold

    return list(KFold(k, shuffle=True, random_state=seed).split(np.arange(n)))


def cross_validate(estimator, X: np.ndarray, y: np.ndarray, folds, train_data=None, models=None) -> dict:
    """Out-of-fold predictions and per-fold Spearman / MSE of fresh clones of ``estimator``.

    Each clone sees only its fold's training rows: hyperparameter searches inside ``fit`` (ridge alpha, GP
    kernel) therefore never see the rows they are scored on. ``train_data(train run indices)``, when given,
    returns what the clone is fitted on instead of ``(X[train], y[train])`` (a law's loss columns, or every
    eval point of those runs); it predicts ``X[test]`` all the same. ``models``, if given, receives each fold's
    fitted clone.
    """
    from scipy.stats import spearmanr
    from sklearn.base import clone

    oof, per_fold = np.empty(len(y)), []
    for f, (train, test) in enumerate(folds):
        fit_on = (X[train], y[train]) if train_data is None else train_data(train)
        model = clone(estimator).fit(*fit_on)
        if models is not None:
            models.append(model)
        oof[test] = model.predict(X[test])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a constant fold has no rank correlation: NaN, reported as such
            rho = float(spearmanr(oof[test], y[test])[0]) if len(test) > 1 else float("nan")
        per_fold.append(
            {
                "fold": f,
                "n_train": len(train),
                "n_test": len(test),
                "spearman": rho,
                "mse": float(np.mean((oof[test] - y[test]) ** 2)),
            }
        )
    rhos = [p["spearman"] for p in per_fold if np.isfinite(p["spearman"])]
    pooled = float(spearmanr(oof, y)[0])
    leave_one_out = all(len(test) == 1 for _, test in folds)  # one run per fold has no rank correlation
    return {
        "folds": per_fold,
        "mean_spearman": pooled if leave_one_out else (float(np.mean(rhos)) if rhos else float("nan")),
        "mean_mse": float(np.mean([p["mse"] for p in per_fold])),
        "oof_spearman": pooled,
        "oof": oof,
    }


@dataclass
class _Candidate:
    """A regressor as fit.py feeds it: the estimator, the per-run rows it predicts, what it is fitted on."""

    estimator: object
    X: np.ndarray
    train_data: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    trajectories: tuple | None = None


def _candidate(
    name, data: Results, columns: dict[str, float], y, seed, horizon_tokens=None, min_tokens=0.0, proportions="own"
) -> _Candidate:
    from regmix_plugin.models.laws import BiMixLaw, MixingLaw
    from regmix_plugin.models.regressors import REGRESSORS

    if name == "ensemble":
        return _ensemble_candidate(data, columns, y, seed, horizon_tokens, min_tokens, proportions)
    if name not in LAW_KINDS:
        return _Candidate(REGRESSORS[name](random_state=seed), data.weights, lambda idx: (data.weights[idx], y[idx]))
    names, weights = list(columns), tuple(columns.values())
    if name == "mixing_law":  # one law per target column, as Ye et al. fit one per validation domain
        Y = np.column_stack([data.metrics[c] for c in names])
        return _Candidate(
            MixingLaw(random_state=seed, column_weights=weights), data.weights, lambda idx: (data.weights[idx], Y[idx])
        )
    if not _has_trajectories(data, columns):
        raise ValueError(
            "--regressor bimix needs trajectories: val_loss/<domain>@<tokens> columns for every --target column and "
            f"a 'tokens' column in --results (run `regmix sweep` with --eval.points >= 2); {data.source} has none"
        )
    from regmix_plugin.models.laws import trajectories

    runs, W, s, L = trajectories(data.weights, data.metrics, names, data.tokens)
    if proportions not in ("own", "all"):
        raise ValueError(f"--bimix_proportions must be own or all, got {proportions!r}")
    own = tuple(_own_domain(c, data.domains) if proportions == "own" else -1 for c in names)
    law = BiMixLaw(
        own_domain=own, column_weights=weights, horizon_tokens=horizon_tokens, min_tokens=min_tokens, random_state=seed
    )
    XS = np.column_stack([W, s])

    def points(idx):
        mine = np.isin(runs, idx)
        return XS[mine], L[mine]

    # each held-out run is predicted at its own end, where its target was measured
    return _Candidate(law, np.column_stack([data.weights, data.tokens]), points, (runs, XS, L, own))


def _full(reuse, weights: np.ndarray) -> np.ndarray:
    """Full mixtures from the rows fit sees (reduced coordinates under reuse)."""
    return weights if reuse is None else reuse.expand(weights)


def _ensemble_candidate(data: Results, columns: dict[str, float], y, seed, *law_args) -> _Candidate:
    """The ensemble of :data:`ENSEMBLE_MEMBERS` the table can feed, each fed as it is fitted alone (:func:`_candidate`):
    gp and lightgbm on ``(weights, y)``, the laws on their loss columns or trajectory points."""
    from regmix_plugin.models.ensemble import EnsembleRegressor

    left_out = {n: why for n, why in _unfeedable(data, columns).items() if n in ENSEMBLE_MEMBERS}
    names = [n for n in ENSEMBLE_MEMBERS if n not in left_out]
    members = {n: _candidate(n, data, columns, y, seed, *law_args) for n in names}
    laws = {n: c for n, c in members.items() if n in LAW_KINDS}
    estimator = EnsembleRegressor(tuple((n, c.estimator) for n, c in members.items()), left_out)
    return _Candidate(
        estimator,
        data.weights,
        lambda idx: (data.weights[idx], y[idx], {n: c.train_data(idx) for n, c in laws.items()}),
    )


def _with_fold_fits(candidate: _Candidate, folds, fold_models: dict[str, list]) -> _Candidate:
    """The ensemble candidate, reusing on each fold the fits its members already made there as candidates of their
    own (the same estimator, rows and seed: the same fit, made once); members without one are fitted as usual."""
    done = {
        train.tobytes(): {n: fold_models[n][f] for n, _ in candidate.estimator.members if fold_models.get(n)}
        for f, (train, _) in enumerate(folds)
    }
    feed = candidate.train_data
    return replace(candidate, train_data=lambda idx: (*feed(idx), done.get(np.asarray(idx).tobytes(), {})))


def _own_domain(column: str, domains: list[str]) -> int:
    """The training domain whose proportion drives ``val_loss/<domain>`` in BiMix's law; -1 for any other column."""
    base = column[len(LOSS_PREFIX) :] if column.startswith(LOSS_PREFIX) else None
    return domains.index(base) if base in domains else -1


def _unfeedable(data: Results, columns: dict[str, float]) -> dict[str, str]:
    """The regressors this table cannot feed, with the reason: one rule for ``auto``'s candidates and the
    ensemble's members."""
    out = {}
    if not _has_trajectories(data, columns):
        out["bimix"] = "the table has no trajectories (val_loss/<d>@<tokens>, tokens)"
    if data.reuse is not None:  # reduced coordinates: a law needs every domain's own weight
        out.update(dict.fromkeys(LAW_KINDS, "the rows were sampled with --reuse (a law needs every domain)"))
    return out


def _has_trajectories(data: Results, columns: dict[str, float]) -> bool:
    """Whether every target column has intermediate eval points and every run its token count."""
    if data.tokens is None or not np.isfinite(data.tokens).all():
        return False
    return all(c.startswith(LOSS_PREFIX) and any(m.startswith(c + "@") for m in data.metrics) for c in columns)


def _law_report(chosen, model, candidate: _Candidate, data: Results, columns, seed, min_tokens):
    """A law's fitted coefficients per target column and, for BiMix, its extrapolation error."""
    if chosen not in LAW_KINDS:
        return None
    if chosen == "mixing_law":
        return {"coefficients": model.coefficients(data.domains, list(columns))}
    from regmix_plugin.models.laws import extrapolation_error

    runs, XS, L, own = candidate.trajectories
    report = {
        "coefficients": model.coefficients(list(columns), data.domains),
        "horizon_tokens": model.horizon_,
        "min_tokens": min_tokens,
        "proportions": {c: "own" if j >= 0 else "all" for c, j in zip(columns, candidate.trajectories[3], strict=True)},
    }
    first_half = XS[:, -1] <= np.array([XS[runs == r, -1].max() for r in runs]) / 2
    if len(np.unique(XS[first_half & (XS[:, -1] >= min_tokens), -1])) < 2:
        report["extrapolation"] = "not measured: fewer than 2 eval points in the first half of the runs"
    else:
        try:
            report["extrapolation"] = extrapolation_error(
                runs, XS, L, own_domain=own, min_tokens=min_tokens, random_state=seed
            )
        except ValueError as e:
            report["extrapolation"] = f"not measured: {e}"
    return report


def _load_training(results, mixtures, losses) -> tuple[Results, dict]:
    if results is not None and (mixtures is not None or losses is not None):
        raise ValueError("give either --results, or --mixtures with --losses, not both")
    if results is not None:
        return read_results(results), {"results": str(results)}
    if mixtures is None or losses is None:
        raise ValueError(
            "no training data: give --results TABLE (from `regmix sweep`), or --mixtures M.csv --losses L.csv "
            "(the official RegMix pair)"
        )
    return read_regmix_csv(mixtures, losses), {"mixtures": str(mixtures), "losses": str(losses)}


def _add_earlier(data: Results, columns: dict[str, float], results: Path | None, also: list[Path]):
    """``data`` plus the valid runs of the ``--also`` sweeps, checked against the sweep ``--results`` came from."""
    from regmix_plugin.formats.sweep_origin import add_earlier_runs, read_origin
    from regmix_plugin.formats.sweep_records import SETUP_FILE

    if results is None or not (Path(results).parent / SETUP_FILE).is_file():
        raise ValueError(
            "--also needs --results to be the results table of a `regmix sweep` (with its sweep.json beside it), so "
            "the earlier runs can be checked against that sweep's corpus, tokenizer and proxy recipe"
        )
    data, report = add_earlier_runs(data, columns, read_origin(Path(results).parent, "--results"), list(also))
    for line in report.lines():
        print(line)
    return data, report.to_dict()


def _finite_rows(data: Results, columns: dict[str, float]) -> tuple[Results, np.ndarray]:
    """Drop runs whose target is NaN or inf (diverged or unfinished proxies), with a warning naming them."""
    y = data.target_values(columns)
    finite = np.isfinite(y)
    if not finite.all():
        bad = [i for i, ok in zip(data.ids, finite, strict=True) if not ok]
        warnings.warn(
            f"dropped {len(bad)} run(s) whose target is NaN or inf (diverged?): {', '.join(bad[:20])}", stacklevel=2
        )
    return data.subset(finite), y[finite]


def _interactions(data: Results, columns: dict[str, float], y: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Ridge coefficients of the target and of every final per-domain validation loss on every domain's weight."""
    from regmix_plugin.models.regressors import LinearRegressor

    out = {"target": LinearRegressor(random_state=seed).fit(data.weights, y).coef_}
    for name in data.metric_names():
        if not name.startswith(LOSS_PREFIX) or "@" in name:
            continue
        values = data.metrics[data.aliases.get(name, name)]
        ok = np.isfinite(values)
        if ok.sum() >= 5:
            out[name[len(LOSS_PREFIX) :]] = LinearRegressor(random_state=seed).fit(data.weights[ok], values[ok]).coef_
    return out


def _interactions_csv(interactions: dict[str, np.ndarray], domains: list[str]) -> str:
    lines = ["target," + ",".join(domains)]
    lines += [f"{name}," + ",".join(repr(float(c)) for c in coef) for name, coef in interactions.items()]
    return "\n".join(lines) + "\n"


def _fold_of(folds, n: int) -> list[int]:
    fold = [0] * n
    for f, (_, test) in enumerate(folds):
        for i in test:
            fold[i] = f
    return fold


def _target_label(columns: dict[str, float]) -> str:
    if len(columns) == 1:
        return next(iter(columns))
    return " + ".join(f"{w:.3g}*{c}" for c, w in list(columns.items())[:3]) + (" + ..." if len(columns) > 3 else "")


def _nan_to(x: float, default: float) -> float:
    return x if np.isfinite(x) else default


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("regmix-plugin")
    except PackageNotFoundError:
        return "unknown"
