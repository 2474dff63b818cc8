"""The shipped tiny recipe under stock `litgpt pretrain`: realized mixture, `regmix inspect`, exact resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from regmix_plugin.__main__ import main as regmix_main
from regmix_plugin.commands.inspect_run import realized_mixture
from regmix_plugin.litgpt_compat import run_pretrain

RECIPE = Path(__file__).parents[1] / "recipes" / "tiny_cpu.yaml"


def tiny_recipe(out_dir: Path, prepared: Path, tokenizer_dir: Path, **train) -> dict:
    cfg = yaml.safe_load(RECIPE.read_text())
    cfg["out_dir"] = str(out_dir)
    cfg["tokenizer_dir"] = str(tokenizer_dir)
    cfg["data"]["init_args"].update(data_path=str(prepared), weights={"prose": 0.7, "code": 0.3})
    cfg["train"].update(train)
    return cfg


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, prepared, tokenizer_dir) -> Path:
    out = tmp_path_factory.mktemp("run") / "full"
    run_pretrain(tiny_recipe(out, prepared, tokenizer_dir, save_interval=10))
    return out


@pytest.mark.slow
def test_realized_mixture_matches_weights_within_one_sample(uninterrupted, capsys):
    cfg = yaml.safe_load(RECIPE.read_text())
    steps = cfg["data"]["init_args"]["max_tokens"] // (
        cfg["train"]["micro_batch_size"] * cfg["model_config"]["block_size"]
    )
    samples = steps * cfg["train"]["micro_batch_size"]
    rows = realized_mixture(uninterrupted / "final")
    assert sum(r["samples"] for r in rows.values()) == samples  # the extra batch LitGPT fetches is not counted
    for domain, weight in {"prose": 0.7, "code": 0.3}.items():
        assert abs(rows[domain]["samples"] - weight * samples) <= 1
        assert rows[domain]["tokens"] == rows[domain]["samples"] * (cfg["model_config"]["block_size"] + 1)
    regmix_main(["inspect", str(uninterrupted / "final"), "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"code", "prose", "tiny"}
    assert printed["tiny"] == {"weight": 0.0, "samples": 0, "tokens": 0, "epochs": 0}  # in the corpus, weight 0
    assert printed["prose"] == {
        "weight": pytest.approx(0.7),
        "samples": rows["prose"]["samples"],
        "tokens": rows["prose"]["tokens"],
        "epochs": 0,
    }
    regmix_main(["inspect", str(uninterrupted / "final")])
    table = capsys.readouterr().out
    assert "prose" in table and "realized" in table and f"{rows['prose']['samples']:,}" in table


@pytest.mark.slow
def test_resume_auto_from_a_checkpoint_equals_the_uninterrupted_run(uninterrupted, tmp_path, prepared, tokenizer_dir):
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(uninterrupted / "step-00000010", resumed / "step-00000010")
    cfg = tiny_recipe(resumed, prepared, tokenizer_dir, save_interval=10)
    cfg["resume"] = "auto"
    run_pretrain(cfg)
    full = torch.load(uninterrupted / "final" / "lit_model.pth", weights_only=True)
    again = torch.load(resumed / "final" / "lit_model.pth", weights_only=True)
    assert full["train_dataloader"]["streams"] == again["train_dataloader"]["streams"]
    assert full["iter_num"] == again["iter_num"] == 20
    for name, tensor in full["model"].items():  # every sample after the stop was the same, in the same order
        assert torch.allclose(tensor, again["model"][name], atol=1e-6), name
