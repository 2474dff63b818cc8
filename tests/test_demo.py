"""`regmix demo --quick`: the whole loop at toy size, its outputs, and resuming instead of starting over."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import yaml
from scipy.stats import spearmanr

from regmix_plugin.__main__ import main as regmix_main


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    regmix_main(["demo", "--out_dir", str(out), "--quick"])
    return out


@pytest.mark.slow
def test_quick_demo_writes_report_plots_and_the_arm_table(quick_demo, capsys):
    summary = json.loads((quick_demo / "summary.json").read_text())
    assert summary["target"] == "prose" and summary["n_proxies"] == 12
    assert [r["arm"] for r in summary["arms"]] != [] and {r["arm"] for r in summary["arms"]} == {
        "regmix",
        "natural",
        "uniform",
        "best_proxy",
        "entropy",
        "bimix",
    }
    losses = [r["target_loss"] for r in summary["arms"]]
    assert losses == sorted(losses) and all(0 < x < 10 for x in losses)
    # the reported CV Spearman is the chosen regressor's mean per-fold rank correlation of the out-of-fold
    # predictions the model directory holds (not a number from elsewhere)
    folds: dict[str, list[tuple[float, float]]] = {}
    with open(quick_demo / "model" / "cv_predictions.csv") as f:
        for row in csv.DictReader(f):
            folds.setdefault(row["fold"], []).append((float(row["prediction"]), float(row["true"])))
    rhos = [spearmanr(*zip(*pairs, strict=True))[0] for pairs in folds.values() if len(pairs) > 1]
    assert len(folds) >= 2 and summary["cv_spearman"] == pytest.approx(np.mean([r for r in rhos if np.isfinite(r)]))
    for plot in ("mixture_vs_prior.png", "model/cv_predicted_vs_true.png", "model/interactions.png"):
        assert (quick_demo / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({plot})" in (quick_demo / "report.md").read_text()
    # every arm's recipe is a stock litgpt pretrain config whose weights are that arm's mixture
    for arm, weights in summary["weights"].items():
        recipe = yaml.safe_load((quick_demo / "recipes" / f"{arm}.yaml").read_text())
        assert recipe["data"]["class_path"] == "regmix_plugin.MixtureData"
        got = recipe["data"]["init_args"]["weights"]
        assert all(abs(got.get(d, 0.0) - w) < 1e-9 for d, w in weights.items())
    chosen = yaml.safe_load((quick_demo / "mixture.yaml").read_text())["weights"]
    assert summary["weights"]["regmix"] == pytest.approx({d: chosen.get(d, 0.0) for d in summary["weights"]["regmix"]})
    # the RegMix arm respects the demo's data bound: no domain more than once in the target run
    manifest = json.loads((quick_demo / "data" / "manifest.json").read_text())
    budget = yaml.safe_load((quick_demo / "recipes" / "regmix.yaml").read_text())["train"]["max_tokens"]
    for d, w in summary["weights"]["regmix"].items():
        assert w * budget <= manifest["domains"][d]["train"]["tokens"] * 1.0 + 1e-6


@pytest.mark.slow
def test_rerun_resumes_instead_of_training_again(quick_demo, capsys):
    runs = sorted((quick_demo / "sweep" / "runs").glob("*.json"))
    stamps = {p.name: p.stat().st_mtime_ns for p in runs}
    before = json.loads((quick_demo / "summary.json").read_text())
    regmix_main(["demo", "--out_dir", str(quick_demo), "--quick"])
    after = json.loads((quick_demo / "summary.json").read_text())
    assert {p.name: p.stat().st_mtime_ns for p in (quick_demo / "sweep" / "runs").glob("*.json")} == stamps
    assert after["arms"] == before["arms"]  # the target arms were not retrained either
    assert after["timings_s"]["sweep"] < before["timings_s"]["sweep"]
