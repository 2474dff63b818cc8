"""The demo's outputs: the arm table printed at the end, ``summary.json`` and ``report.md`` with its plots."""

from __future__ import annotations

import json
from pathlib import Path

from regmix_plugin.atomic import write_json, write_text
from regmix_plugin.weights import epochs_used

ARM_TITLES = {
    "regmix": "RegMix (regmix optimize)",
    "natural": "natural token distribution",
    "uniform": "uniform",
    "best_proxy": "best proxy's mixture",
    "entropy": "entropy, training-free (regmix entropy)",
    "bimix": "BiMix law (fit --regressor bimix)",
    "regmix_d": "RegMix-D offline (regmix schedule; mean weights shown)",
    "active": "RegMix, proxies chosen actively (regmix sweep --active, gp)",
    "random_subset": "RegMix, the first proxies drawn (gp)",
}


def arm_table(
    losses: dict[str, dict[str, float]], target: str, epochs: dict[str, float], proxies: dict[str, int] | None = None
) -> list[dict]:
    """One row per arm, best target loss first: target loss, mean over every measured domain, max epochs, and
    the proxy runs behind its mixture (0 for arms chosen without proxies)."""
    rows = [
        {
            "arm": arm,
            "target_loss": d[target],
            "mean_loss": sum(d.values()) / len(d),
            "max_epochs": epochs[arm],
            "proxies": (proxies or {}).get(arm, 0),
        }
        for arm, d in losses.items()
    ]
    return sorted(rows, key=lambda r: r["target_loss"])


def max_epochs(weights: dict[str, float], train_tokens: dict[str, int], budget: int) -> float:
    """Passes the target run makes over its most-repeated domain under ``weights``."""
    return max(epochs_used({d: w for d, w in weights.items() if w > 0}, train_tokens, budget).values())


def format_table(rows: list[dict], target: str) -> str:
    lines = [
        f"| arm | proxies | val loss on `{target}` (target) | mean val loss, all domains | epochs of most-repeated "
        "domain |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {ARM_TITLES.get(r['arm'], r['arm'])} | {r.get('proxies', 0)} | {r['target_loss']:.4f} | "
        f"{r['mean_loss']:.4f} | {r['max_epochs']:.2f} |"
        for r in rows
    ]
    return "\n".join(lines)


def format_weights(arms: dict[str, dict[str, float]]) -> str:
    domains = sorted(next(iter(arms.values())))
    lines = ["| domain | " + " | ".join(arms) + " |", "|---|" + "---:|" * len(arms)]
    lines += [f"| {d} | " + " | ".join(f"{arms[a].get(d, 0.0):.3f}" for a in arms) + " |" for d in domains]
    return "\n".join(lines)


def write_report(pipe, arms: dict[str, dict[str, float]], losses: dict[str, dict[str, float]], chosen: dict) -> dict:
    """Print the final table and write ``summary.json`` and ``report.md`` into ``pipe.out_dir``."""
    out: Path = pipe.out_dir
    meta = json.loads((out / "model" / "model.json").read_text())
    from regmix_plugin.formats.manifest import read_manifest

    tokens = read_manifest(out / "data").train_tokens()
    budget = pipe.target_tokens()
    from regmix_plugin.demo.active import proxy_counts

    proxies = proxy_counts(pipe)
    rows = arm_table(losses, pipe.target, {arm: max_epochs(w, tokens, budget) for arm, w in arms.items()}, proxies)
    winner = rows[0]["arm"]
    summary = {
        "target": pipe.target,
        "arms": rows,
        "winner": winner,
        "cv_spearman": meta["cv_spearman"],
        "regressor": meta["regressor"],
        "n_proxies": pipe.proxies,
        "weights": arms,
        "predicted": chosen.get("prediction"),
        "timings_s": {k: round(v, 1) for k, v in pipe.timings.items()},
    }
    write_json(out / "summary.json", summary)
    timing = " | ".join(f"{k} {v:.0f}s" for k, v in pipe.timings.items())
    plots = [
        ("The chosen mixture next to the prior (the corpus's token distribution)", "mixture_vs_prior.png"),
        ("Cross-validated prediction vs measured target loss, one dot per proxy", "model/cv_predicted_vs_true.png"),
        (
            "Domain interactions: ridge coefficient of each domain's loss on each domain's weight",
            "model/interactions.png",
        ),
    ]
    report = [
        "# regmix demo report",
        "",
        f"Target domain: `{pipe.target}` (validation loss is what RegMix minimises). {pipe.proxies} proxies were "
        f"swept; the regressor chosen by cross-validation is **{summary['regressor']}** with CV Spearman "
        f"**{summary['cv_spearman']:.3f}**. Proxies and the optimized mixture are held to at most "
        f"{pipe.max_epochs:g} pass(es) over any domain in the target run ({budget:,} tokens).",
        "",
        "## Target model, one run per arm",
        "",
        format_table(rows, pipe.target),
        "",
        *_fewer_proxies_note(pipe, arms, proxies),
        "## Mixtures",
        "",
        format_weights(arms),
        "",
        "## Plots",
        "",
        *[f"### {title}\n\n![{title}]({path})\n" for title, path in plots if (out / path).is_file()],
        "## Time per stage",
        "",
        timing,
        "",
        "Recipes for each arm are in `recipes/`; train one yourself with "
        "`litgpt pretrain --config recipes/regmix.yaml`.",
    ]
    write_text(out / "report.md", "\n".join(report) + "\n")
    print("\n" + format_table(rows, pipe.target))
    print(f"\nCV Spearman ({summary['regressor']}): {summary['cv_spearman']:.3f}")
    print("RegMix weights: " + ", ".join(f"{d} {w:.3f}" for d, w in sorted(arms["regmix"].items())))
    print(f"Time per stage: {timing}")
    print(f"Report: {out / 'report.md'}")
    return summary


def _fewer_proxies_note(pipe, arms: dict, proxies: dict[str, int]) -> list[str]:
    """How the ``active`` and ``random_subset`` arms got their proxies, when they ran."""
    if "active" not in arms and "random_subset" not in arms:
        return []
    return [
        f"Fewer proxies: `active` started from the first {pipe.active_initial} of the {pipe.proxies} proxies above "
        f"(their runs reused, not retrained) and `regmix sweep --active` proposed the rest in rounds of "
        f"{pipe.active_batch}, up to {pipe.active_budget} ({proxies.get('active', 0)} runs); `random_subset` is the "
        f"first {min(pipe.active_budget, pipe.proxies)} of the {pipe.proxies} proxies. Both fit a GP and run "
        f"`regmix optimize`; `regmix` fits all {pipe.proxies} with the regressor cross-validation chose "
        f"(**{json.loads((pipe.out_dir / 'model' / 'model.json').read_text())['regressor']}**). One seed.",
        "",
    ]
