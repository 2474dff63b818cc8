"""A real-token corpus where a mixture *schedule* beats every static mixture, for RegMix-D's ground truth.

Mechanism, stated before any run (the corpus was designed around it, not tuned to a result):

* A tiny LitGPT model cannot tell which Markov chain a window of text comes from (every chain uses every
  word; see ``synthetic.py``), so it learns a *blend* of the chains it was trained on, and its loss on a
  chain grows as that chain's share of the blend falls.
* The blend is **recency-weighted**: SGD/AdamW keeps moving the blend toward the most recent data, so tokens
  seen late count more in the final model than the same tokens spread evenly over the run (the reason
  pretraining recipes "anneal" on their best data at the end).
* The target's own chain, ``scarce``, has little train data: under a one-pass epoch bound (``max_epochs``
  1) it can fill only ~30% of the target run. ``near`` is plentiful and shares half of ``scarce``'s
  transitions; ``far`` is plentiful and unrelated. The target (``target``, val-only) is drawn from
  ``scarce``'s chain.

So the best *static* mixture spends the whole ``scarce`` allowance, spread evenly, and fills the rest with
``near``; a schedule with the same token counts that trains ``near`` first and spends ``scarce`` late ends
with more of ``scarce`` in the final blend, hence a lower target loss. If the loss depended only on token
counts per domain, the two would tie: the win can only come from order. ``premise_arms`` are the hand-written
arms that check this directly with real ``litgpt pretrain`` (``bench/regmixd_tokens.py --premise``).

Output layout as ``synthetic.py`` (``regmix prepare`` reads ``train/`` and ``val/``)::

    OUT/train/{far,near,scarce}/...jsonl
    OUT/val/{far,near,scarce,target}/...jsonl
    OUT/regmixd_corpus.json
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from synthetic import TARGET, _doc_lengths, _walk, _write, make_sources

from regmix_plugin.atomic import write_json

DOMAINS = ("far", "near", "scarce")  # sorted, as mixture domains are
MANIFEST = "regmixd_corpus.json"


def chains(seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The vocabulary and each domain's transition matrix: scarce = chain 1, near = half chain 1 + half chain 0,
    far = chain 2 (``synthetic.make_sources``: branching 3, 2 and 5)."""
    vocab, (p0, p1, p2) = make_sources(3, seed)
    return vocab, {"scarce": p1, "near": 0.5 * p1 + 0.5 * p0, "far": p2}


def build_regmixd_corpus(
    out_dir: str | Path,
    seed: int = 0,
    scarce_words: int = 90_000,
    plentiful_words: int = 400_000,
    val_words: int = 10_000,
    target_val_words: int = 30_000,
    doc_words: tuple[int, int] = (200, 400),
) -> dict:
    """Write the corpus (train: far, near, scarce; val: those and ``target``) and return its manifest."""
    vocab, P = chains(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = {"scarce": scarce_words, "near": plentiful_words, "far": plentiful_words}
    info = {}
    for k, name in enumerate(DOMAINS):
        rng = np.random.default_rng([seed, 77, k])
        train = _walk(P[name], _doc_lengths(rng, sizes[name], doc_words), rng)
        val = _walk(P[name], _doc_lengths(rng, val_words, doc_words), rng)
        info[name] = {
            "train": _write(out_dir / "train" / name, name, ["".join(vocab[ids]).lstrip() for ids in train]),
            "val": _write(out_dir / "val" / name, name, ["".join(vocab[ids]).lstrip() for ids in val]),
        }
    rng = np.random.default_rng([seed, 77, len(DOMAINS)])
    target = _walk(P["scarce"], _doc_lengths(rng, target_val_words, doc_words), rng)
    info[TARGET] = {"val": _write(out_dir / "val" / TARGET, TARGET, ["".join(vocab[ids]).lstrip() for ids in target])}
    manifest = {"seed": seed, "target": TARGET, "target_chain": "scarce", "domains": info}
    write_json(out_dir / MANIFEST, manifest)
    return manifest


def premise_arms(cap: float) -> dict[str, list[dict[str, float]]]:
    """Hand-written arms (2 equal stages each) that test the mechanism, for a ``scarce`` allowance ``cap``.

    Every arm spends the same ``scarce`` share ``s = 0.9 * cap`` (a margin under the one-pass bound) except
    the two lighter statics; ``late`` and ``early`` differ from ``static_cap`` only in *when* it is spent.
    """
    s = round(0.9 * cap, 3)

    def w(far, scarce):
        return {"far": far, "near": round(1 - far - scarce, 6), "scarce": scarce}

    return {
        "static_cap": [w(0, s)] * 2,  # expected best static: all scarce allowed, rest near
        "static_cap_far": [w(0.25, s)] * 2,
        "static_half_cap": [w(0, round(s / 2, 3))] * 2,
        "static_uniformish": [w(round((1 - s) / 2, 3), s)] * 2,
        "late": [w(0, 0.0), w(0, 2 * s)],  # the schedule the mechanism predicts wins
        "early": [w(0, 2 * s), w(0, 0.0)],  # the same counts the other way round: predicted to lose
    }


# ---------------------------------------------------------------------------------------------- protocol
def _budget(steps: int, lr: float, warmup: int, batch: int = 16, block: int = 128) -> dict:
    tokens = steps * batch * block
    return {
        "train.max_tokens": tokens,
        "data.init_args.max_tokens": tokens,
        "train.micro_batch_size": batch,
        "train.global_batch_size": batch,
        "optimizer.init_args.lr": lr,
        "train.min_lr": lr / 10,
        "train.lr_warmup_steps": warmup,
    }


#: The sizes of ``test_recovery.py`` (measured there on a Markov-chain corpus like this one): proxies of
#: 2 layers x 64 wide, 60 steps at lr 3e-2; the target model is the demo's 4 layers x 64 wide, 150 steps at
#: lr 1e-2 (cosine to lr/10). The target run may pass over each domain at most once (data.max_epochs 1; the
#: stream counts whole 129-token blocks, `optimize` counts tokens, so a mixture at the bound repeats < 1% of
#: a block's worth: ``warn``, not ``error``).
PROXY = {**_budget(60, 3e-2, 6), "model_config.n_embd": 64, "model_config.intermediate_size": 256}
TARGET_MODEL = {**_budget(150, 1e-2, 10), "data.init_args.max_epochs": 1.0, "data.init_args.on_epoch_limit": "warn"}
TARGET_STEPS = 150


@dataclass(frozen=True)
class TokenProtocol:
    """Static RegMix vs offline and online RegMix-D with real tokens; every setting fixed before it was run.

    Per seed (the seed builds the corpus, samples the proxies and seeds fit and search):
    ``n_proxies`` static proxies -> ``regmix fit`` (``regressor``) -> ``regmix optimize`` (100k candidates,
    top 100, the corpus prior) for static RegMix; ``n_proxies`` proxies of ``stages`` independent stages ->
    ``fit_trajectory`` (auto features, ``regressor``, run-wise CV) -> ``regmix schedule`` (100k candidates,
    top 128, smoothing 0.2) for offline; online runs the offline schedule's first stage, then
    ``RegMixDController`` (a ``losses``-feature model fitted on the same staged sweep, the same search)
    decides each later stage from the run's own checkpoint. Every arm is the same target model on the same
    token budget, one pass over each domain at most, scored on ``target``'s val split with the same blocks.
    """

    n_proxies: int = 24
    stages: int = 2
    regressor: str = "gp"
    eval_points: int = 4
    n_candidates: int = 100_000
    top_k: int = 128
    workers: int = 2
    objective: str = "greedy"
    """`regmix schedule --search.objective` and the controller's: ``greedy`` (the default on main when this
    protocol was fixed) or ``joint`` (added after the greedy run: see the README)."""
    pessimism: float = 0.0
    """`regmix schedule --search.pessimism` and the controller's (0, ranking by the prediction alone, when this
    protocol was fixed; added later: see the README)."""

    @property
    def arm(self) -> str:
        name = "regmix_d" if self.objective == "greedy" else f"regmix_d_{self.objective}"
        return name if self.pessimism == 0 else f"{name}_p{self.pessimism:g}"

    def pipeline(self, root: Path, seed: int):
        from regmix_plugin.demo.pipeline import Pipeline
        from regmix_plugin.resources import recipe_path

        corpus = root / "corpus"
        if not (corpus / MANIFEST).is_file():
            build_regmixd_corpus(corpus, seed=seed)
        return Pipeline(
            out_dir=root / "run",
            target=TARGET,
            proxy_recipe=recipe_path("demo/proxy.yaml"),
            target_recipe=recipe_path("demo/target.yaml"),
            raw=corpus / "train",
            val_raw=corpus / "val",
            proxies=self.n_proxies,
            workers=self.workers,
            seed=seed,
            vocab_size=512,
            eval_points=self.eval_points,
            val_tokens=8192,
            target_val_tokens=16384,
            n_candidates=self.n_candidates,
            max_epochs=1.0,
            regressor=self.regressor,
            regmixd_regressor=self.regressor,
            regmixd_stages=self.stages,
            arm_names=("regmix",),
            overrides={"proxy": PROXY, "target": TARGET_MODEL},
        )

    def premise(self, root: Path, seed: int = 0) -> dict:
        """Train ``premise_arms`` as target models; returns the scarce allowance, the arms and their target loss."""
        from regmix_plugin.commands.sweep import EvalArgs, LocalArgs, sweep
        from regmix_plugin.formats.manifest import read_manifest
        from regmix_plugin.formats.mixture_table import write_mixtures
        from regmix_plugin.formats.sweep_records import read_records

        pipe = self.pipeline(root, seed)
        pipe.tokenizer_and_data()
        tokens = read_manifest(pipe.out_dir / "data").train_tokens()
        cap = tokens["scarce"] / pipe.target_tokens()
        arms = premise_arms(cap)
        write_mixtures(pipe.out_dir / "premise.csv", arms, list(DOMAINS), stages=2)
        sweep(
            mixtures=pipe.out_dir / "premise.csv",
            data_path=pipe.out_dir / "data",
            recipe=pipe.working_recipe("target"),
            out_dir=pipe.out_dir / "premise",
            eval=EvalArgs(points=0, val_tokens=pipe.target_val_tokens),
            local=LocalArgs(workers=self.workers),
        )
        records = read_records(pipe.out_dir / "premise")
        losses = {arm: _final(records[arm])[TARGET] for arm in arms}
        return {"cap": cap, "arms": arms, "losses": losses}

    def run(self, root: Path, seed: int) -> dict:
        pipe = self.pipeline(root, seed)
        pipe.tokenizer_and_data()
        results = pipe.proxy_sweep()
        chosen = pipe.fit_and_optimize(results)
        static = pipe.train_arms({"regmix": chosen["weights"]})["regmix"][TARGET]
        stages = pipe.regmix_d_schedule(self.objective, self.arm, self.pessimism)
        offline = pipe.train_regmix_d(stages, self.arm)[TARGET]
        online, decisions = self.online(pipe, seed)
        return {
            "seed": seed,
            "static": static,
            "offline": offline,
            "online": online,
            "mixtures": {
                "static": _round(chosen["weights"]),
                "offline": [_round(s["weights"]) for s in stages],
                "online": [_round(stages[0]["weights"])] + [_round(d["weights"] or {}) for d in decisions],
            },
            "decisions": [{k: d[k] for k in ("stage", "checkpoint", "fault", "predicted_target")} for d in decisions],
            "timings": {k: round(v) for k, v in pipe.timings.items()},
        }

    def online(self, pipe, seed: int) -> tuple[float, list[dict]]:
        """The offline recipe plus RegMixDController, trained with the stock loop; its target loss and decisions."""
        import json

        import yaml

        from regmix_plugin.commands.fit_trajectory import fit_trajectories
        from regmix_plugin.formats.sweep_records import read_records
        from regmix_plugin.litgpt_compat import eager_pretrain, run_pretrain
        from regmix_plugin.models.trajectory import trajectories_from_records
        from regmix_plugin.pretrain.scoring import domain_losses, load_checkpoint, val_blocks

        staged = pipe.out_dir / "regmix_d"
        out = pipe.out_dir / "arms" / ("online" + self.arm.removeprefix("regmix_d"))
        with pipe.stage("fit_trajectory (online, losses features)"):
            trajs, wd, ld = trajectories_from_records(read_records(staged / "sweep"))
            fit_trajectories(
                trajs,
                wd,
                ld,
                f"val_loss/{TARGET}",
                "losses",
                self.regressor,
                staged / "traj_online",
                min(5, len(trajs) // 2),
                seed,
            )
        cfg = yaml.safe_load((pipe.out_dir / "recipes" / f"{self.arm}.yaml").read_text())
        lag = 2  # one data worker (the recipe's) prefetching 2 batches; decide 2 batches before the switch
        switch = TARGET_STEPS // self.stages
        cfg["out_dir"] = str(out)
        cfg["train"]["save_interval"] = switch - lag  # the checkpoint the controller scores: just before it decides
        cfg["data"]["init_args"]["callbacks"] = [
            {
                "class_path": "regmix_plugin.RegMixDController",
                "init_args": {
                    "model": str(staged / "traj_online"),
                    "out_dir": str(out),
                    "lag": lag,
                    "val_tokens": 8192,
                    "n_candidates": self.n_candidates,
                    "top_k": self.top_k,
                    "seed": seed,
                    "objective": self.objective,
                    "pessimism": self.pessimism,
                },
            }
        ]
        if not (out / "final" / "lit_model.pth").is_file():
            with pipe.stage("target models"), eager_pretrain():  # as the other arms' (`regmix sweep --compile auto`)
                run_pretrain(cfg)
        decisions = [json.loads(line) for line in (out / "decisions.jsonl").read_text().splitlines()]
        model = load_checkpoint(out / "final")
        blocks = val_blocks(pipe.out_dir / "data", [TARGET], model.config.block_size, pipe.target_val_tokens)[0]
        return domain_losses(model, blocks)[TARGET], decisions


def _final(record) -> dict[str, float]:
    if record.status != "done":
        raise RuntimeError(f"run {record.run_id} failed: {record.error}")
    return next(p["losses"] for p in record.losses if p["final"])


def _round(w: dict) -> dict:
    return {d: round(float(v), 3) for d, v in w.items()}
