"""The PNG figures `regmix fit` and `regmix optimize` write next to their outputs.

- ``cv_predicted_vs_true.png``: cross-validated prediction against the measured target, one dot per run;
- ``interactions.png``: ridge coefficient of each target domain's loss on each training domain's weight
  (the RegMix paper's Figure 7; blue = more of that domain lowers the loss);
- ``<mixture>_vs_prior.png``: the chosen mixture next to the prior, one pair of bars per domain;
- ``active/rounds.png`` (``regmix sweep --active``): per round, the predicted optimum with its std and the best
  target measured so far; the CV Spearman and the trust region's length.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from regmix_plugin.atomic import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def warm_up() -> None:
    """Import matplotlib ahead of time (from a helper thread while the main thread computes)."""
    _pyplot()


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    _pyplot().close(fig)


def cv_scatter(
    path: Path, y_true: np.ndarray, y_pred: np.ndarray, target: str, regressor: str, folds: int, fold_mean: float
) -> None:
    """Out-of-fold predicted vs. true target, with the identity line and the Spearman correlations."""
    from scipy.stats import spearmanr

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter(y_true, y_pred, s=12, alpha=0.7)
    lo, hi = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--", label="prediction = truth")
    ax.set_xlabel(f"measured {target}")
    ax.set_ylabel(f"{folds}-fold CV prediction")
    pooled = spearmanr(y_true, y_pred)[0]
    ax.set_title(f"{regressor}, {len(y_true)} runs: Spearman {fold_mean:.3f} per fold (mean), {pooled:.3f} pooled")
    ax.legend(loc="upper left")
    _save(fig, path)


def interaction_heatmap(path: Path, coefficients: dict[str, np.ndarray], domains: list[str]) -> None:
    """Rows: target domains' validation losses; columns: training domains' weights; colour: ridge coefficient.

    Each row is scaled by its largest absolute coefficient, so a domain whose loss moves a lot does not wash
    out the others; the raw coefficients are in ``interactions.csv``.
    """
    plt = _pyplot()
    names = list(coefficients)
    matrix = np.array([coefficients[n] for n in names])
    matrix = matrix / np.maximum(np.abs(matrix).max(1, keepdims=True), 1e-300)
    limit = 1.0
    fig, ax = plt.subplots(figsize=(0.45 * len(domains) + 3, 0.4 * len(names) + 2))
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(len(domains)), domains, rotation=60, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("training domain (weight)")
    ax.set_ylabel("validation loss of")
    ax.set_title("Domain interactions: ridge coefficients (blue: more weight, lower loss)")
    fig.colorbar(image, ax=ax, label="coefficient / largest |coefficient| of its row")
    _save(fig, path)


def mixture_bars(path: Path, domains: list[str], chosen: np.ndarray, prior: np.ndarray, target: str) -> None:
    """The chosen mixture next to the prior, one pair of bars per domain."""
    plt = _pyplot()
    x = np.arange(len(domains))
    fig, ax = plt.subplots(figsize=(0.5 * len(domains) + 3, 4.5))
    ax.bar(x - 0.2, prior, width=0.4, label="prior")
    ax.bar(x + 0.2, chosen, width=0.4, label="chosen (mean of top-k)")
    ax.set_xticks(x, domains, rotation=60, ha="right")
    ax.set_xlabel("domain")
    ax.set_ylabel("weight")
    ax.set_title(f"Mixture chosen for {target}")
    ax.legend()
    _save(fig, path)


def active_rounds(path: Path, rounds: list[dict], target: str) -> None:
    """The active loop's rounds (``Round`` records, in order) against the runs so far: the predicted optimum +- its
    std and the best measured target (top); the CV Spearman and the trust region's length (bottom)."""
    plt = _pyplot()
    runs = [r["runs"] for r in rounds]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.5, 6), sharex=True, height_ratios=(3, 2))
    top.errorbar(runs, [r["predicted"] for r in rounds], yerr=[r["std"] for r in rounds], marker="o", capsize=3,
                 label="predicted optimum +- std")  # fmt: skip
    best = [(n, r["best_observed"]) for n, r in zip(runs, rounds, strict=True) if r.get("best_observed") is not None]
    if best:
        top.plot(*zip(*best, strict=True), marker="s", ls="--", label="best measured run so far")
    top.set_ylabel(target if len(target) < 40 else "target")
    top.set_title(f"Active loop: {len(rounds)} round(s), {runs[-1]} runs")
    top.legend()
    bottom.plot(runs, [r["cv_spearman"] for r in rounds], marker="o", color="C2", label="CV Spearman")
    bottom.set_ylabel("CV Spearman")
    bottom.set_xlabel("runs trained")
    bottom.xaxis.get_major_locator().set_params(integer=True)
    lengths = [(n, r["trust_length"]) for n, r in zip(runs, rounds, strict=True) if r.get("trust_length")]
    if lengths:
        right = bottom.twinx()
        right.step(*zip(*lengths, strict=True), where="post", color="C3", label="trust region length")
        right.set_yscale("log", base=2)
        right.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
        right.set_ylabel("trust region length")
        right.legend(loc="lower right")
    bottom.legend(loc="lower left")
    _save(fig, path)
