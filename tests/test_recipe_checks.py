"""`regmix recipe` refuses recipes that would fail later (issue 9): a key `litgpt pretrain` rejects, a budget
that repeats a domain past the epoch guard; it warns about a mixture chosen for another budget, and the
comment above the weights tells where they came from."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from regmix_plugin.commands.recipe import recipe
from regmix_plugin.formats.mixture_yaml import write_mixture

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "recipes" / "tiny_cpu.yaml"
PILE_1B = ROOT / "recipes" / "pile" / "tinyllama_1b_regmix.yaml"


def _mixture(path: Path, weights: dict[str, float], target_tokens: int | None = None) -> Path:
    write_mixture(
        path,
        {
            "weights": weights,
            "prediction": {"at_mixture": 3.25, "at_prior": 3.5},
            "constraints": {"target_tokens": target_tokens},
            "provenance": {
                "created": "2026-01-02T03:04:05+00:00",
                "regressor": "gp",
                "model": "out/model",
                "cv_spearman": 0.9712,
                "n_runs": 64,
            },
        },
    )
    return path


def _template(tmp_path: Path, edit) -> Path:
    text = TINY.read_text()
    path = tmp_path / "template.yaml"
    path.write_text(edit(text))
    return path


def test_a_mistyped_key_is_refused_and_nothing_is_written(tmp_path):
    template = _template(
        tmp_path,
        lambda t: t.replace(
            "  max_tokens: 40960\n\n  # Limits the number of optimizer",
            "  max_tokns: 40960\n\n  # Limits the number of optimizer",
        ),
    )
    with pytest.raises(ValueError) as e:
        recipe(_mixture(tmp_path / "m.yaml", {"code": 0.5, "prose": 0.5}), template, tmp_path / "new.yaml")
    assert str(e.value).startswith(f"--template {template}: `litgpt pretrain` would reject the recipe:")
    assert "max_tokns" in str(e.value) and str(e.value).endswith("nothing was written")
    assert not (tmp_path / "new.yaml").exists()


def test_the_epoch_guard_runs_against_the_recipes_budget(tmp_path, prepared):
    # the tiny recipe's model on the test corpus, trained for 25B tokens: far more than 15 passes over it
    template = _template(
        tmp_path,
        lambda t: t.replace("data_path: data/tiny", f"data_path: {prepared}").replace(
            "  max_tokens: 40960\n\n  # Limits the number", "  max_tokens: 25000000000\n\n  # Limits the number"
        ),
    )
    mixture = _mixture(tmp_path / "m.yaml", {"code": 0.5, "prose": 0.5}, target_tokens=400_000)
    warned = r"chosen for --constraints.target_tokens 400,000, but the recipe trains train.max_tokens 25,000,000,000"
    with pytest.warns(UserWarning, match=warned), pytest.raises(ValueError) as e:
        recipe(mixture, template, tmp_path / "new.yaml")
    message = str(e.value)
    assert message.startswith(
        f"--mixture {mixture} in --template {template}: with --data.max_tokens "
        "25,000,000,000 some domains would repeat more than --data.max_epochs 15 times:"
    )
    assert "  code: " in message and " epochs" in message and message.endswith("nothing was written")
    assert not (tmp_path / "new.yaml").exists()
    # the recipe's own budget passes, with no warning
    ok = _template(tmp_path, lambda t: t.replace("data_path: data/tiny", f"data_path: {prepared}"))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        recipe(
            _mixture(tmp_path / "m2.yaml", {"code": 0.5, "prose": 0.5}, target_tokens=40960), ok, tmp_path / "new.yaml"
        )
    assert yaml.safe_load((tmp_path / "new.yaml").read_text())["data"]["init_args"]["weights"] == {
        "code": 0.5,
        "prose": 0.5,
    }


def test_the_stale_comment_above_the_weights_is_replaced_by_true_provenance(tmp_path, capsys):
    template = yaml.safe_load(PILE_1B.read_text())
    domains = sorted(template["data"]["init_args"]["weights"])
    weights = {d: (0.5 if d == "pile_cc" else 0.5 / (len(domains) - 1)) for d in domains}
    mixture = _mixture(tmp_path / "m.yaml", weights, target_tokens=25_000_000_000)
    recipe(mixture, PILE_1B, tmp_path / "new.yaml")
    text = (tmp_path / "new.yaml").read_text()
    assert "Published mixture" not in text and "digit for digit" not in text
    block = text[: text.index("    weights:\n")].rsplit("data_path: data/pile\n", 1)[1]
    assert block == (
        "\n"
        f"    # data.init_args.weights set by `regmix recipe` from {mixture} (template: {PILE_1B}).\n"
        "    # That mixture was chosen by `regmix optimize` on 2026-01-02T03:04:05+00:00 with a gp model (out/model),\n"
        "    # CV Spearman 0.971 over 64 proxy runs; predicted target 3.2500 vs 3.5000 at the prior.\n"
        "    # It was chosen for a run of 25,000,000,000 tokens (--constraints.target_tokens).\n"
        "    #\n"
        "    # Sampling weight per domain: keys are domain names of the prepared corpus, values sum to 1 (a drift\n"
        "    # of up to 1e-3 is renormalised). A domain with weight 0 is never opened.\n"
        "    # (type: Optional[dict[str, float]], default: null)\n"
    )
    assert "      # Pile-CC (type: float)\n      pile_cc: 0.5\n" in text  # each domain keeps its description
    assert "the epoch guard runs when `litgpt pretrain` sets up" in capsys.readouterr().out  # no data/pile here
    # re-running on its own output replaces the provenance instead of stacking it
    recipe(mixture, tmp_path / "new.yaml", tmp_path / "again.yaml")
    again = (tmp_path / "again.yaml").read_text()
    assert again.count("set by `regmix recipe`") == 2 and again.count("Sampling weight per domain") == 1
