"""`regmix optimize`: simulate candidate mixtures, rank them with a fitted model, average the top-k.

    regmix optimize --model out/model --data_path data/pile --constraints.target_tokens 25e9 --out mixture.yaml

Candidates are Dirichlet draws around a prior, as in the RegMix paper: each draw uses concentration
``prior * s`` with ``s`` picked from 15 log-spaced values between ``--strength`` bounds. Draws that break
a constraint (per-domain min/max, excluded domains, the max-epochs bound from ``--constraints.target_tokens``) are
projected onto the allowed set, the polytope ``{lower <= w <= upper, sum(w) = 1}``. That set is convex,
so the mean of the top-k lies in it too.

With a LightGBM model, ``--scoring screen`` (the default) ranks all candidates with the first 2.5% of the
trees, keeps the best 5%, adds the trees up to 25%, keeps the best 0.5% (at least 5,000), and scores those
survivors with every tree: they get exactly the full model's prediction. A candidate the prefix
ranks badly but the whole model ranks in the top-k would be lost; ``bench/optimize_speed.py`` measures
that against ``--scoring brute`` (every candidate through every tree) on the same candidates.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np

from regmix_plugin.counts import TokenCount
from regmix_plugin.formats.mixture_yaml import write_mixture
from regmix_plugin.formats.model_dir import LAW_KINDS, FittedModel, load_fitted, model_reuse, read_model_meta
from regmix_plugin.weights import (
    ConstraintArgs,
    SamplerArgs,
    constraint_bounds,
    constraints_record,
    prior_weights,
    sample_candidates,
    train_sizes,
)

_FEASIBLE = 1e-9


def optimize(
    model: Path,
    out: Path = Path("mixture.yaml"),
    data_path: Path | None = None,
    prior: dict[str, float] | None = None,
    n_candidates: int = 1_000_000,
    top_k: int = 100,
    constraints: ConstraintArgs = ConstraintArgs(),
    domain_tokens: dict[str, TokenCount] | None = None,
    maximize: bool = False,
    scoring: Literal["screen", "brute"] = "screen",
    sampler: SamplerArgs = SamplerArgs(),
    seed: int = 0,
    num_threads: int = 2,
    kl_to_prior: float = 0.0,
) -> None:
    """Find the mixture a fitted model predicts to be best, under data-availability and user constraints.

    Arguments:
        model: A model directory written by `regmix fit`.
        out: The mixture YAML to write (weights, predictions, constraints, provenance); a PNG comparing it
            with the prior is written next to it.
        data_path: A corpus prepared by `regmix prepare`: its token counts give the default prior and the
            max-epochs bound.
        prior: Centre of the simulated mixtures, ``{domain: weight}``. Default: the corpus' token
            distribution with ``--data_path``, else the mean mixture of the fitted runs.
        n_candidates: Number of simulated mixtures.
        top_k: The chosen mixture is the mean of the best ``top_k`` candidates.
        constraints: What the mixture must respect: the epoch bound at ``--constraints.target_tokens``,
            per-domain min/max weights, excluded domains (every ``--constraints.*`` flag is listed below).
        domain_tokens: Train tokens per domain for the max-epochs bound, when there is no ``--data_path``.
        maximize: Maximise the target (a downstream score) instead of minimising it (a loss).
        scoring: How a LightGBM model scores the candidates: ``screen`` ranks them with a prefix of its trees and
            finishes the best with all; ``brute`` puts every candidate through the whole model. Other regressors
            always score them whole.
        sampler: How candidates are drawn around the prior: Dirichlet concentration strengths (the paper's 0.1
            to 5, 15 log-spaced values), shared with ``regmix sample``.
        seed: Seed of the simulation.
        num_threads: CPU threads for sampling and LightGBM prediction.
        kl_to_prior: Law models only: add this times KL(mixture || prior) to the minimised target, keeping the
            solution near the prior (olmix's default is 0.05). 0 (the default) solves the law alone.
    """
    from concurrent.futures import ThreadPoolExecutor

    from regmix_plugin import plots

    meta = read_model_meta(model)
    domains = meta["domains"]
    manifest = None
    if data_path is not None:
        from regmix_plugin.formats.manifest import read_manifest

        manifest = read_manifest(data_path)
    sampler = SamplerArgs(**sampler) if isinstance(sampler, dict) else sampler
    constraints = ConstraintArgs.of(constraints)
    center, prior_source = prior_weights(domains, prior, manifest) or (
        np.array([meta["run_mean_mixture"][d] for d in domains], float),
        "mean mixture of the fitted runs",
    )
    tokens = domain_tokens if domain_tokens is not None else (manifest.train_tokens() if manifest else None)
    tokens = train_sizes(domains, constraints.block_size, data_path, tokens)
    lower, upper = constraint_bounds(domains, constraints, tokens)
    if top_k < 1 or n_candidates < top_k:
        raise ValueError(f"--top_k must be between 1 and --n_candidates ({n_candidates}), got {top_k}")
    is_law = meta["regressor"] in LAW_KINDS
    if kl_to_prior and not is_law:
        raise ValueError(
            f"--kl_to_prior needs a law model (regmix fit --regressor bimix or mixing_law); --model "
            f"{str(model)!r} holds {meta['regressor']!r}"
        )
    reuse = model_reuse(meta, model)
    # under reuse the candidates are drawn over the reduced coordinates and expanded: every one keeps the ratios
    space = (center, lower, upper) if reuse is None else (reuse.reduce(center), *reuse.reduce_bounds(lower, upper))
    if reuse is not None and space[1][0] > space[2][0] + _FEASIBLE:
        raise ValueError(
            f"--model {str(model)!r} keeps the reuse block {', '.join(reuse.block)} at fixed ratios, and the "
            "--constraints bounds on those domains leave no block total that meets them all; loosen them"
        )
    # numpy's samplers and LightGBM's predict release the GIL; imports and model parsing do not: let them overlap.
    with ThreadPoolExecutor(2) as pool:
        drawn = pool.submit(sample_candidates, *space, n_candidates, sampler, seed, num_threads)
        fitted = load_fitted(model)
        candidates = drawn.result() if reuse is None else reuse.expand(drawn.result())
        pool.submit(plots.warm_up)
        best, scores, n_full = top_k_search(fitted, candidates, top_k, maximize, scoring, num_threads)
    chosen = np.clip(candidates[best].mean(0), lower, upper)
    direct = None
    if is_law:
        from regmix_plugin.models.simplex import minimize_on_simplex

        sign = -1.0 if maximize else 1.0
        searched = chosen
        chosen, value = minimize_on_simplex(
            lambda W: sign * fitted.predict(W), lower, upper, prior=center, kl_to_prior=kl_to_prior, seed=seed
        )
        chosen = np.where(chosen < 1e-12, 0.0, chosen)  # SLSQP's 1e-17 "zeros" are zeros
        chosen /= chosen.sum()
        at_searched = float(fitted.predict(searched[None])[0])
        direct = {
            "method": "SLSQP on the law from several starts (models.simplex.minimize_on_simplex); no candidate search",
            "kl_to_prior": kl_to_prior,
            "candidate_search_would_pick": {
                "weights": _rounded(domains, searched),
                "prediction": at_searched,
                "l1_to_chosen": float(np.abs(searched - chosen).sum()),
                "note": f"mean of the top {top_k} of {n_candidates:,} candidates (`search` below) under the same model",
            },
        }
    if abs(chosen.sum() - 1) > _FEASIBLE or (chosen < lower - _FEASIBLE).any() or (chosen > upper + _FEASIBLE).any():
        raise RuntimeError("the averaged mixture left the constraint set; please report this with your command")
    at_mixture, at_prior = fitted.predict(np.stack([chosen, center]))
    uncertainty = {
        "top_k_prediction": {
            "mean": float(scores.mean()),
            "std": float(scores.std()),
            "min": float(scores.min()),
            "max": float(scores.max()),
        },
        "model_cv_rmse": fitted.meta.get("cv_rmse"),
        "note": "model_cv_rmse is the typical error of one prediction on unseen runs (K-fold CV on the fitted runs)",
    }
    if fitted.meta["regressor"] == "gp":
        _, std = fitted.regressor.predict(fitted.features(chosen[None]), return_std=True)
        uncertainty["gp_posterior_std_at_mixture"] = float(std[0])
    record = {
        "weights": _rounded(domains, chosen),
        "prediction": {
            "target": fitted.meta["target"],
            "goal": "maximize" if maximize else "minimize",
            "at_mixture": float(at_mixture),
            "at_prior": float(at_prior),
            **uncertainty,
        },
        **({"solver": direct} if direct else {}),
        "weights_std_top_k": _rounded(domains, candidates[best].std(0)),
        "prior": {
            "source": prior_source,
            "weights": _rounded(domains, center),
            "within_constraints": bool(((center >= lower - _FEASIBLE) & (center <= upper + _FEASIBLE)).all()),
        },
        "constraints": constraints_record(domains, lower, upper, constraints),
        **({"reuse": {**reuse.to_dict(), "searched": reuse.coordinates}} if reuse is not None else {}),
        "search": {
            "method": scoring if fitted.meta["regressor"] == "lightgbm" else "full",
            "n_candidates": n_candidates,
            "scored_by_full_model": n_full,
            "top_k": top_k,
            "sampler": {
                "min_strength": sampler.min_strength,
                "max_strength": sampler.max_strength,
                "num_strengths": sampler.num_strengths,
            },
            "seed": seed,
        },
        "provenance": {
            "model": str(model),
            "regressor": fitted.meta["regressor"],
            "cv_spearman": fitted.meta.get("cv_spearman"),
            "n_runs": fitted.meta.get("n_runs"),
            "data_path": str(data_path) if data_path else None,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "regmix_plugin_version": fitted.meta.get("regmix_plugin_version"),
        },
    }
    write_mixture(Path(out), record, _header(record), manifest)
    spec = fitted.meta.get("target_spec")
    label = spec if isinstance(spec, str) else "the fitted target"
    plots.mixture_bars(Path(out).with_name(Path(out).stem + "_vs_prior.png"), domains, chosen, center, label)
    if direct:
        alt = direct["candidate_search_would_pick"]
        print(
            f"law solved directly; the candidate search would have picked a mixture at L1 {alt['l1_to_chosen']:.3f} "
            f"predicted {alt['prediction']:.4f}"
        )
    print(f"predicted target {at_mixture:.4f} at the chosen mixture, {at_prior:.4f} at the prior; wrote {out}")


def top_k_search(
    fitted: FittedModel, candidates: np.ndarray, k: int, maximize: bool, scoring: str = "screen", num_threads: int = 2
) -> tuple[np.ndarray, np.ndarray, int]:
    """Indices and predictions of the ``k`` best candidates (full mixtures), and how many were scored by the whole
    model."""
    from regmix_plugin.models.regressors import LightGBMRegressor

    sign = -1.0 if maximize else 1.0
    reg = fitted.regressor
    n = len(candidates)
    if isinstance(reg, LightGBMRegressor):
        trees = reg.n_trees()
        cuts = [0, trees] if scoring == "brute" else [0, trees // 40, trees // 4, trees]
        stages = list(zip(cuts[:-1], cuts[1:], strict=True))
        # Survivors: 5% after the first 2.5% of the trees, 0.5% after the first 25%; never fewer than 5,000
        # fully scored (so a small search is nearly brute force) or than 5 * k. Halving the 5% lost part of
        # the brute-force top-100 on a real 99-run model; these settings lost none on the models we tried.
        final = min(n, max(5 * k, n // 200, 5_000))
        keeps = [min(n, max(5 * final, n // 20)), final]
        idx, partial, X = np.arange(n), np.zeros(n), fitted.features(candidates)
        for s, (start, stop) in enumerate(stages):
            if stop > start:
                rows = X if len(idx) == n else X[idx]  # no 100 MB copy on the first pass
                partial[idx] += reg.predict(rows, start, stop, num_threads=num_threads)
            if s < len(stages) - 1 and len(idx) > keeps[s]:
                idx = idx[np.argpartition(sign * partial[idx], keeps[s])[: keeps[s]]]
        scores, n_full = partial[idx], len(idx)
    else:
        batches = np.array_split(candidates, max(1, n // 50_000))
        idx, scores, n_full = np.arange(n), np.concatenate([fitted.predict(b) for b in batches]), n
    best = np.argsort(sign * scores, kind="stable")[:k]
    return idx[best], scores[best], n_full


def _rounded(domains: Sequence[str], values: np.ndarray) -> dict[str, float]:
    return {d: float(f"{float(v):.10g}") for d, v in zip(domains, values, strict=True)}


def _header(record: dict) -> str:
    prov, pred = record["provenance"], record["prediction"]
    search = record["search"]
    how = (
        "the minimum (SLSQP, no search) of"
        if "solver" in record
        else (f"mean of the top {search['top_k']} of {search['n_candidates']:,} simulated mixtures,\nranked by")
    )
    return (
        f"Mixture chosen by `regmix optimize` ({prov['created']}): {how} a {prov['regressor']} model\n"
        f"({prov['model']}; CV Spearman {prov['cv_spearman']:.3f} over {prov['n_runs']} runs).\n"
        f"Predicted target {pred['at_mixture']:.4f} here vs {pred['at_prior']:.4f} at the prior.\n"
        "Make a training recipe: regmix recipe --mixture THIS.yaml --template RECIPE.yaml --out NEW.yaml"
    )
