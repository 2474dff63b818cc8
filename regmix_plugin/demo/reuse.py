"""The demo's opt-in ``reuse`` scenario: a corpus gains a domain; reuse the old mixture with a quarter of the proxies.

    regmix demo --scenario reuse --out_dir demo_reuse             # 48 + 48 + 12 proxies, 3 target models
    regmix demo --scenario reuse --out_dir /tmp/r --quick true    # toy size

Version 1 of the embedded corpus lacks one domain (``--new_domain``, default ``licenses``); RegMix runs on it at
the full budget and writes ``v1/mixture.yaml``. Version 2 adds the domain. Three mixtures for version 2 are then
trained as target models and compared:

- ``full``: a full recomputation, RegMix at the full budget (``v2_full/``);
- ``reuse``: `regmix sample --reuse v1/mixture.yaml` with a quarter of the proxies (``v2_reuse/``): the unchanged
  domains keep version 1's ratios as one block, only the block's total and the new domain vary;
- ``reuse_also``: the same quarter plus version 1's proxies as data (`regmix fit --also v1/sweep`), fitted in
  the full coordinates (the old runs do not keep the block's ratios).

Every version shares version 1's tokenizer (a tokenizer is fixed once a model family is trained on it), so the
unchanged domains' prepared chunks, and their fingerprints, are byte-identical across versions.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from regmix_plugin.atomic import write_json, write_text

NEW_DOMAIN = "licenses"
ARMS = ("full", "reuse", "reuse_also")
TITLES = {
    "full": "full recomputation (regmix sample + fit + optimize)",
    "reuse": "reuse (regmix sample --reuse v1/mixture.yaml)",
    "reuse_also": "reuse + version 1's runs (regmix fit --also v1/sweep)",
}


def reuse_demo(out_dir: Path, quick: bool, proxies: int | None, workers: int, seed: int, new_domain: str) -> dict:
    """Run the scenario (module docstring) in ``out_dir`` and write ``report.md`` and ``summary.json``."""
    v1, full, reuse = pipelines(out_dir, quick, proxies, workers, seed, new_domain)
    corpora(v1, full, reuse, new_domain, quick)
    v1.fit_and_optimize(v1.proxy_sweep())  # RegMix on version 1: v1/mixture.yaml, the mixture to reuse
    weights = {"full": full.fit_and_optimize(full.proxy_sweep())["weights"]}
    results = reuse.proxy_sweep()
    weights["reuse"] = reuse.fit_and_optimize(results)["weights"]
    weights["reuse_also"] = reuse.fit_and_optimize(results, also=[v1.out_dir / "sweep"], name="also")["weights"]
    domains = sorted(full_domains(full))
    arms = {arm: {d: float(w.get(d, 0.0)) for d in domains} for arm, w in weights.items()}
    losses = full.train_arms(arms)  # one target sweep, on version 2's data, for every arm
    earlier = json.loads((reuse.out_dir / "model_also" / "model.json").read_text())["source"]["also"]
    proxies_of = {"full": full.proxies, "reuse": reuse.proxies, "reuse_also": reuse.proxies}
    reused = {"full": 0, "reuse": 0, "reuse_also": sum(len(ids) for ids in earlier["used"].values())}
    target = full.target
    rows = [
        {
            "arm": arm,
            "target_loss": losses[arm][target],
            "mean_loss": sum(losses[arm].values()) / len(losses[arm]),
            "new_proxies": proxies_of[arm],
            "earlier_runs_used": reused[arm],
        }
        for arm in ARMS
    ]
    summary = {
        "target": target,
        "new_domain": new_domain,
        "seed": seed,
        "v1_proxies": v1.proxies,
        "arms": rows,
        "margin_reuse": losses["reuse"][target] - losses["full"][target],
        "margin_reuse_also": losses["reuse_also"][target] - losses["full"][target],
        "weights": arms,
        "timings_s": {
            name: {k: round(v, 1) for k, v in p.timings.items()}
            for name, p in (("v1", v1), ("v2_full", full), ("v2_reuse", reuse))
        },
    }
    write_json(out_dir / "summary.json", summary)
    write_text(out_dir / "report.md", format_report(summary))
    print("\n" + format_table(rows, target))
    print(f"Report: {out_dir / 'report.md'}")
    return summary


def pipelines(out_dir: Path, quick: bool, proxies: int | None, workers: int, seed: int, new_domain: str) -> tuple:
    """The scenario's three pipelines: version 1, version 2 recomputed in full, version 2 by reuse."""
    from regmix_plugin.demo.corpus import DEMO_DOMAINS, DEMO_TARGET
    from regmix_plugin.demo.pipeline import Pipeline
    from regmix_plugin.models.regressors import MIN_CV_RUNS

    if new_domain not in DEMO_DOMAINS or new_domain == DEMO_TARGET:
        choices = ", ".join(d for d in DEMO_DOMAINS if d != DEMO_TARGET)
        raise ValueError(f"--new_domain {new_domain!r}: pick a demo domain other than the target; one of {choices}")
    out_dir = Path(out_dir)

    def pipeline(name: str, raw: str, **kw) -> Pipeline:
        pipe = Pipeline.for_demo(out_dir / name, out_dir / raw, workers, seed, quick, proxies, **kw)
        pipe.check()
        return pipe

    v1, full = pipeline("v1", "raw_v1"), pipeline("v2_full", "raw")
    reuse = pipeline("v2_reuse", "raw", reuse_from=v1.out_dir / "mixture.yaml")
    reuse.proxies = max(MIN_CV_RUNS, full.proxies // 4)
    return v1, full, reuse


def corpora(v1, full, reuse, new_domain: str, quick: bool) -> None:
    """Both corpus versions, built and prepared with version 1's tokenizer (``v1/data``, ``v2_*/data``)."""
    from regmix_plugin.demo.corpus import DEMO_DOMAINS, build_demo_corpus

    raw = full.raw
    with v1.stage("corpus"):
        caps = {d: 60_000 for d in DEMO_DOMAINS} if quick else None
        build_demo_corpus(raw, max_chars=caps, seed=v1.seed)
        _without(raw, v1.raw, new_domain)
    v1.tokenizer_and_data()
    for pipe in (full, reuse):  # a tokenizer outlives corpus versions; and unchanged domains then match
        if not (pipe.out_dir / "tokenizer" / "tokenizer.json").is_file():
            shutil.copytree(v1.out_dir / "tokenizer", pipe.out_dir / "tokenizer", dirs_exist_ok=True)
        pipe.tokenizer_and_data()


def full_domains(pipe) -> list[str]:
    from regmix_plugin.formats.manifest import read_manifest

    return read_manifest(pipe.out_dir / "data").train_domains()


def _without(raw: Path, dest: Path, domain: str) -> None:
    """Version 1 of the raw corpus: every domain directory of ``raw`` but ``domain``, copied to ``dest``."""
    for src in sorted(p for p in raw.iterdir() if p.is_dir() and p.name != domain):
        shutil.copytree(src, dest / src.name, dirs_exist_ok=True)


def format_table(rows: list[dict], target: str) -> str:
    lines = [
        f"| mixture for version 2 | new proxies | earlier runs used | val loss on `{target}` (target) | "
        "mean val loss, all domains |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {TITLES[r['arm']]} | {r['new_proxies']} | {r['earlier_runs_used']} | {r['target_loss']:.4f} | "
        f"{r['mean_loss']:.4f} |"
        for r in rows
    ]
    return "\n".join(lines)


def format_report(summary: dict) -> str:
    target, arms = summary["target"], summary["weights"]
    weights = ["| domain | " + " | ".join(arms) + " |", "|---|" + "---:|" * len(arms)]
    weights += [f"| {d} | " + " | ".join(f"{arms[a][d]:.3f}" for a in arms) + " |" for d in next(iter(arms.values()))]
    return "\n".join(
        [
            "# regmix demo: reuse when the corpus gains a domain",
            "",
            f"Version 1 of the corpus lacked `{summary['new_domain']}`; RegMix ran on it with "
            f"{summary['v1_proxies']} proxies. Version 2 adds it. Each mixture below was trained as the target "
            f"model on version 2 (seed {summary['seed']}).",
            "",
            format_table(summary["arms"], target),
            "",
            f"Reuse minus full recomputation, target loss: {summary['margin_reuse']:+.4f} (reuse), "
            f"{summary['margin_reuse_also']:+.4f} (reuse + version 1's runs). One seed: compare with the seed-to-seed "
            "spread of the full recomputation (`bench/reuse_spread.py`).",
            "",
            "## Mixtures",
            "",
            *weights,
            "",
        ]
    )
