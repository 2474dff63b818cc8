"""The scientific check of the RegMix chain: on a corpus with a known answer, the pipeline finds it.

The synthetic corpus (``regmix_plugin.synthetic``) has four Markov-chain sources and a val-only ``target``
domain whose documents are drawn from them in the known proportion alpha = (s0 .5, s1 .3, s2 .2, s3 0). The
same :class:`regmix_plugin.demo.Pipeline` that ``regmix demo`` runs (prepare -> sample -> sweep -> fit ->
optimize -> recipe -> target-model arms) must

- recover a mixture within L1 0.3 of alpha (the stated tolerance), with s3 (alpha 0) near 0;
- fit a regressor whose 5-fold CV Spearman on the proxies is high;
- give a target model that, trained on the recovered mixture, beats the same model trained on the uniform one.

Sizes (chosen by measurement, so the test runs in about 2 minutes on 2 idle cores):

- proxies: 32 x (2 layers, 64 wide, 60 steps of 16 x 128 tokens, lr 3e-2). 64 wide learns the sources'
  transitions far faster than the demo's 32-wide proxy (target loss at alpha after 100 steps: 3.51 at 64 wide,
  3.76 at 32 wide, bigram limit 3.46), and lr 3e-2 beats 1e-2; at 60 steps alpha still has the lowest loss of
  (alpha, .4/.3/.3, .6/.25/.15, .5/.4/.1, 1/3 each, .7/.2/.1, uniform). Fewer than ~24 proxies were unreliable
  (L1 0.25-0.34 at 16-20 runs).
- regressor: ``gp`` rather than ``auto``: on these 32 runs LightGBM's CV Spearman is within 0.01 of the GP's,
  so ``auto`` could flip to it on another machine's numerics, and LightGBM recovered L1 0.42 where the GP
  recovered 0.12; linear (ridge on raw weights) cannot express -log w and returns a vertex (L1 1.4).
- target arms: 4 layers, 64 wide (the demo's target model), 150 steps of 16 x 128 tokens, lr 1e-2.

Measured on this setup (seed 0): recovered (.48, .36, .16, .00), L1 0.12; GP CV Spearman 0.93; target loss
3.46 (RegMix) vs 3.60 (uniform), when these sizes were chosen. Robustness of the GP fit on the same 32 runs:
Gaussian noise of 0.005 nats on every proxy loss (10 draws) gave L1 0.11-0.28; fit/optimize seeds 0-3 gave L1
0.11-0.13. Leaving one run out (a bigger change than any numeric drift) gave median L1 0.16 and max 0.48, hence
the tolerance 0.3, not tighter.

Spread across machines. Proxies are not bit-identical from one machine to another, so every bound below states
the spread measured by ``python bench/recovery_spread.py --variants threads2 eager compiled --noise_draws 8``
(one run, this release, 2-core machine): three numerics variants of the whole chain (eager and compiled proxies,
1 and 2 threads: proxy losses differ by ~1e-6 between them), then 8 draws of 0.005-nat Gaussian noise on every
proxy loss (thousands of times that drift; fit, optimize and laws re-run, target models not retrained). The
figures at this release: L1 0.094 (0.079-0.102 over all 11 rows), GP CV Spearman 0.886 (0.886-0.900), BiMix L1
0.093 (0.092-0.094), BiMix Spearman vs the exact loss 0.955 (0.955), out-of-fold 0.852 (0.850-0.855), BiMix
extrapolation error 0.068 (0.068-0.068), target loss 3.406 vs 3.600 (gain 0.194 on all three numerics
variants). The one figure that moved a lot, Ye's mixing law's L1 (0.29-0.58, 0.29 vs 0.53 between eager and
compiled proxies alone), is another method's and is reported, not asserted.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import spearmanr
from synthetic import DEFAULT_ALPHA, TARGET, bigram_limit_loss, build_synthetic_corpus

from regmix_plugin.demo.pipeline import Pipeline
from regmix_plugin.resources import recipe_path
from regmix_plugin.weights import ConstraintArgs

L1_TOLERANCE = 0.3  # measured 0.094; 0.079-0.102 across numerics variants and noise draws (docstring)
ZERO_SOURCE_MAX = 0.05  # weight of s3 (alpha 0); measured 0.003 (0.0019-0.0033)
MIN_CV_SPEARMAN = 0.75  # measured 0.886 (0.886-0.900; 0.82-0.93 over fold seeds)
MIN_LOSS_GAIN = 0.05  # uniform minus RegMix target loss, nats; measured 0.194 on all 3 numerics variants (0.14 before)
# BiMix out-of-fold vs the corpus's exact loss; measured 0.955 on all 11 spread rows (0.943-0.977 over fold seeds)
MIN_LAW_SPEARMAN_TRUE = 0.9
# BiMix out-of-fold vs the proxies' own noisy losses; measured 0.852 (0.850-0.855; 0.84-0.90 over fold seeds)
MIN_LAW_SPEARMAN_OBSERVED = 0.8
# measured 0.068 (0.068-0.068 across the spread rows; 0.068-0.080 on earlier sweeps): worse than the flat forecast
# on these toy runs
MAX_TOY_EXTRAPOLATION_ERROR = 0.10

pytestmark = pytest.mark.science  # `make science`: 32 proxies and two target models, ~5 min on 2 cores

CORPUS = {"train_words": 100_000, "val_words": 10_000, "target_val_words": 30_000}


def _budget(steps: int, batch: int, lr: float, warmup: int) -> dict:
    tokens = steps * batch * 128  # block_size 128
    return {
        "train.max_tokens": tokens,
        "data.init_args.max_tokens": tokens,
        "train.micro_batch_size": batch,
        "train.global_batch_size": batch,
        "optimizer.init_args.lr": lr,
        "train.min_lr": lr / 10,
        "train.lr_warmup_steps": warmup,
    }


PROXY = {**_budget(60, 16, 3e-2, 6), "model_config.n_embd": 64, "model_config.intermediate_size": 256}
TARGET_MODEL = _budget(150, 16, 1e-2, 10)  # the recipe's 4 layers x 64 wide


@pytest.fixture(scope="module")
def recovery(tmp_path_factory):
    return recovery_summary(tmp_path_factory.mktemp("recovery"))


def recovery_pipeline(root, out_dir=None, compile: str = "auto", workers: int = 2) -> Pipeline:
    """The test's pipeline over the synthetic corpus under ``root`` (``compile``: `regmix sweep --compile`)."""
    return Pipeline(
        out_dir=out_dir or root / "run",
        target=TARGET,
        proxy_recipe=recipe_path("demo/proxy.yaml"),
        target_recipe=recipe_path("demo/target.yaml"),
        raw=root / "synthetic" / "train",
        val_raw=root / "synthetic" / "val",
        proxies=32,
        workers=workers,
        seed=0,
        vocab_size=512,
        eval_points=5,
        val_tokens=8192,
        target_val_tokens=16384,
        n_candidates=100_000,
        max_epochs=15,
        regressor="gp",
        arm_names=("regmix", "uniform"),
        overrides={"proxy": PROXY, "target": TARGET_MODEL},
        compile=compile,
    )


def recovery_summary(root, compile: str = "auto", workers: int = 2) -> dict:
    """The whole chain on the synthetic corpus under ``root``; ``compile`` as `regmix sweep --compile` (a
    numerics variant that ``bench/recovery_spread.py`` compares: compiled kernels sum in another order)."""
    manifest = build_synthetic_corpus(root / "synthetic", seed=0, **CORPUS)
    pipe = recovery_pipeline(root, compile=compile, workers=workers)
    pipe.tokenizer_and_data()
    results = pipe.proxy_sweep()
    summary, chosen = analyse(pipe, results, manifest["alpha"], root / "synthetic")
    losses = pipe.train_arms(pipe.arms(chosen, results))
    summary["target_loss"] = {arm: per_domain[TARGET] for arm, per_domain in losses.items()}
    summary["timings_s"] = {k: round(v, 1) for k, v in pipe.timings.items()}
    print("recovery:", json.dumps(summary))
    return summary


def analyse(pipe: Pipeline, results, alpha: dict[str, float], corpus) -> tuple[dict, dict]:
    """Fit, optimize and the law families on a finished sweep's ``results``: the figures the tests assert (all
    but the target models'), and the chosen mixture."""
    chosen = pipe.fit_and_optimize(results)
    names = list(alpha)
    recovered = np.array([chosen["weights"].get(d, 0.0) for d in names])
    alpha_ = np.array([alpha[d] for d in names])
    model = json.loads((pipe.out_dir / "model" / "model.json").read_text())
    summary = {
        "recovered": dict(zip(names, recovered.round(4).tolist(), strict=True)),
        "l1": float(np.abs(recovered - alpha_).sum()),
        "regressor": model["regressor"],
        "cv_spearman": model["cv_spearman"],
        "laws": _laws(pipe, results, names, alpha_, corpus),
    }
    return summary, chosen


def _laws(pipe, results, names: list[str], alpha: np.ndarray, corpus) -> dict:
    """The law families on the same sweep: fit on the target's own loss column, solve, compare with alpha.

    The target is validation-only, so no training domain's proportion is "its own": BiMix's law for it is
    driven by every proportion (``prod_j r_j**-alpha_j * (B / s**beta + C)``, see regmix_plugin.models.laws).
    ``val_loss/s*`` (the mean of the four sources' losses) exercises the paper's per-domain laws.
    """
    from regmix_plugin.commands.fit import fit
    from regmix_plugin.commands.optimize import optimize
    from regmix_plugin.formats.mixture_yaml import read_mixture

    out = {}
    for kind, target in (
        ("bimix", f"val_loss/{TARGET}"),
        ("mixing_law", f"val_loss/{TARGET}"),
        ("bimix_sources", "val_loss/s*"),
    ):
        model = pipe.out_dir / f"model_{kind}"
        fit(results=results, target=target, regressor=kind.removesuffix("_sources"), out=model, seed=0)
        meta = json.loads((model / "model.json").read_text())
        cv = json.loads((model / "cv.json").read_text())["candidates"][meta["regressor"]]
        out[kind] = {
            "cv_spearman": meta["cv_spearman"],
            "oof_spearman": cv["oof_spearman"],
            "extrapolation": meta["law"].get("extrapolation"),
        }
        if kind == "bimix":
            out[kind]["true_loss_spearman"] = _spearman_to_true_loss(model / "cv_predictions.csv", results, corpus)
            out[kind]["broken_extrapolation"] = _broken_extrapolations(results, f"val_loss/{TARGET}")
        if kind != "bimix_sources":
            optimize(
                model=model,
                out=pipe.out_dir / f"mixture_{kind}.yaml",
                data_path=pipe.out_dir / "data",
                constraints=ConstraintArgs(target_tokens=pipe.target_tokens(), max_epochs=pipe.max_epochs),
                n_candidates=20_000,
                seed=0,
            )
            weights = read_mixture(pipe.out_dir / f"mixture_{kind}.yaml")["weights"]
            got = np.array([weights.get(d, 0.0) for d in names])
            out[kind].update(recovered=got.round(4).tolist(), l1=float(np.abs(got - alpha).sum()))
    return out


def _spearman_to_true_loss(cv_predictions, results, corpus) -> float:
    """Spearman of the out-of-fold predictions with each run's *exact* target loss under its mixture.

    The synthetic corpus knows the loss its mixture deserves: ``bigram_limit_loss`` is the target loss of the
    ideal next-word model of the w-mixture of the chains (no training noise, no finite-step lag). A 60-step
    proxy's measured loss is a noisy reading of that order (measured Spearman 0.944 between the two).
    """
    from regmix_plugin.formats.results import read_results
    from regmix_plugin.formats.table import read_columns

    data = read_results(results)
    mixture = dict(zip(data.ids, data.weights, strict=True))
    table = read_columns(cv_predictions, "cv_predictions.csv")
    ids, predicted = table[data.id_column], np.asarray(table["prediction"], float)
    exact = [bigram_limit_loss(corpus, dict(zip(data.domains, mixture[i], strict=True))) for i in ids]
    return float(spearmanr(predicted, exact).statistic)


def _broken_extrapolations(results, column: str) -> dict[str, float]:
    """What broken BiMix fits score on the extrapolation check (fit on the first halves, predict the ends).

    A bound on the real fit's error means something only if these cannot meet it: a law blind to the mixture
    (every run fitted as uniform), the mean first-half loss for every run, and the real law asked in the
    wrong unit (steps instead of tokens: the s of a 2048-token step).
    """
    from regmix_plugin.formats.results import read_results
    from regmix_plugin.models.laws import BiMixLaw, trajectories

    data = read_results(results)
    runs, W, s, L = trajectories(data.weights, data.metrics, [column], data.tokens)
    X = np.column_stack([W, s])
    ends = np.array([s[runs == r].max() for r in runs])
    first, last = s <= ends / 2, s == ends
    truth = L[last, 0]

    def error(predicted) -> float:
        return float(np.mean(np.abs(predicted - truth) / truth))

    law = BiMixLaw(own_domain=(-1,), column_weights=(1.0,)).fit(X[first], L[first])
    blind = X.copy()
    blind[:, :-1] = 1 / W.shape[1]
    blind_law = BiMixLaw(own_domain=(-1,), column_weights=(1.0,)).fit(blind[first], L[first])
    return {
        "blind_to_mixture": error(blind_law.predict(blind[last])),
        "mean_first_half_loss": error(np.full(truth.shape, L[first, 0].mean())),
        "s_in_steps": error(law.predict(np.column_stack([W[last], s[last] / 2048]))),
    }


@pytest.mark.slow
def test_pipeline_recovers_the_generating_mixture(recovery):
    assert DEFAULT_ALPHA == {"s0": 0.5, "s1": 0.3, "s2": 0.2, "s3": 0.0}  # the numbers above are for this alpha
    assert recovery["regressor"] == "gp"
    assert recovery["cv_spearman"] >= MIN_CV_SPEARMAN, recovery
    assert recovery["l1"] <= L1_TOLERANCE, recovery
    assert recovery["recovered"]["s3"] <= ZERO_SOURCE_MAX, recovery


@pytest.mark.slow
def test_law_optimised_mixture_recovers_the_generating_mixture(recovery, measured):
    bimix = recovery["laws"]["bimix"]
    assert bimix["l1"] <= L1_TOLERANCE, recovery["laws"]  # measured 0.08 and 0.09 on two sweeps of this setup
    # Rank agreement on runs the law never saw (5-fold CV, out-of-fold predictions pooled over the 32 runs), against
    # the target loss each run's mixture truly deserves (the corpus's exact loss, see _spearman_to_true_loss; the
    # issue's bar 0.9; measured 0.943-0.977 over 5 fold seeds on a sweep of this setup) and against the proxies'
    # own measured losses, which are noisy readings of it (0.84-0.90 on the same folds; 0.85 and 0.92 on two
    # earlier sweeps; the GP measured 0.82-0.93): the law ranks unseen mixtures by their true loss better than
    # the proxies' measurements do (those correlate 0.944 with it).
    measured(
        f"bimix out-of-fold Spearman: vs exact loss {bimix['true_loss_spearman']:.3f}, vs measured "
        f"{bimix['oof_spearman']:.3f}"
    )
    assert bimix["true_loss_spearman"] >= MIN_LAW_SPEARMAN_TRUE, recovery["laws"]
    assert bimix["oof_spearman"] >= MIN_LAW_SPEARMAN_OBSERVED, recovery["laws"]
    # Ye et al.'s single law on the target is a monotone function of a linear form, so its optimum tends to the
    # boundary (measured L1 1.0, 0.53, 0.38 and 0.29 on four sweeps). That is another method's result: reported, not
    # asserted.
    law = recovery["laws"]["mixing_law"]
    measured(
        f"mixing_law (Ye et al.) on the target: L1 {law['l1']:.3f} to alpha, recovered {law['recovered']}, "
        f"out-of-fold Spearman {law['oof_spearman']:.3f} (reported, not asserted)"
    )


@pytest.mark.slow
def test_bimix_extrapolation_on_toy_runs_is_reported_honestly(recovery, measured):
    # Fit on eval points up to 30 of 60 steps, predict step 60. On these toy runs the loss is still in its
    # early phase and the curves of different mixtures differ in shape, which a law shared across mixtures
    # cannot express, so the law does NOT beat the flat forecast "loss at step 30" (measured on two sweeps:
    # target 6.8% and 7.8% vs 3.6% and 4.0%; per-domain laws 7.3% and 8.0% vs 6.0% and 6.8%). Longer,
    # constant-LR proxies did not fix it (16 runs x 180 steps, eval from step 30: 4.3% vs 3.7%; CHANGELOG).
    # What this asserts is that the fit is sane, not that the law extrapolates better than flat: here it does not.
    # Broken fits on the same sweep score worse than the real one and than the bound (measured: blind to the
    # mixture 11.2%, the mean first-half loss 12.4%, asked in steps 31%, against the law's 6.8%).
    # How far the broken fits are from the bound is reported, not asserted (blind_to_mixture measured 0.112 against
    # the bound 0.10: too close to hold on every machine); what is asserted is that the real fit beats them.
    broken = recovery["laws"]["bimix"]["broken_extrapolation"]
    measured("broken fits' extrapolation error " + json.dumps({k: round(v, 4) for k, v in broken.items()}))
    for kind in ("bimix", "bimix_sources"):
        e = recovery["laws"][kind]["extrapolation"]
        measured(
            f"{kind} extrapolation: mean relative error {e['mean_relative_error']:.4f} (flat forecast "
            f"{e['naive_mean_relative_error']:.4f}), fitted up to {e['fitted_up_to_tokens']:.0f} tokens"
        )
        assert e["fitted_up_to_tokens"] == e["predicted_tokens"] / 2
        assert e["mean_relative_error"] < MAX_TOY_EXTRAPOLATION_ERROR, e
        if kind == "bimix":  # the broken fits are of the same column
            assert e["mean_relative_error"] < min(broken.values()), (e, broken)


@pytest.mark.slow
def test_recovered_mixture_beats_uniform_on_the_target(recovery):
    loss = recovery["target_loss"]
    assert set(loss) == {"regmix", "uniform"}
    assert loss["regmix"] < loss["uniform"] - MIN_LOSS_GAIN, recovery
