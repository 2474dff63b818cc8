"""The demo's :class:`Pipeline`: the user's own commands, in the user's order, over one raw corpus.

It runs: build a corpus, train a tokenizer,
``prepare``, ``sample``, ``sweep`` the proxies, ``fit``, ``optimize``, ``recipe``, then trains the target model
on each arm's recipe (RegMix, natural token distribution, uniform, best proxy, the training-free entropy
mixture of ``regmix entropy``, and the BiMix law fitted on the proxies' trajectories) through the same sweep
machinery (two at a time, resumable, scored per domain) and writes ``report.md`` with the plots. Every stage
is idempotent, so re-running after an interruption picks up where it stopped (the sweeps skip finished runs).
The scientific check in the tests runs this same :class:`Pipeline` on the synthetic known-mixture corpus.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from regmix_plugin.atomic import write_text

#: Target-model arms: RegMix (fit + optimize), the corpus's token distribution, uniform, the best proxy's
#: mixture, `regmix entropy` (training-free), the BiMix law solved directly, and (opt-in, ``--arms``) RegMix on
#: a quarter of the proxies, chosen by `regmix sweep --active` (``active``) or the first ones drawn (``random_subset``).
ARMS = ("regmix", "natural", "uniform", "best_proxy", "entropy", "bimix", "active", "random_subset")
#: Arms whose mixture.yaml a command wrote (the others are written by the demo).
MIXTURE_FILES = {
    "regmix": "mixture.yaml",
    "entropy": "mixture_entropy.yaml",
    "bimix": "mixture_bimix.yaml",
    "active": "mixture_active.yaml",
    "random_subset": "mixture_random_subset.yaml",
}


@dataclass
class Pipeline:
    """One RegMix run over a raw corpus: the stages, their sizes and where everything goes."""

    out_dir: Path
    target: str
    """Domain whose validation loss is minimised (the paper's Pile-CC)."""
    proxy_recipe: Path
    target_recipe: Path
    raw: Path | None = None
    val_raw: Path | None = None
    proxies: int = 48
    workers: int = 2
    seed: int = 0
    vocab_size: int = 1024
    val_fraction: float = 0.1
    eval_points: int = 2
    val_tokens: int = 16384
    target_val_tokens: int = 65536
    n_candidates: int = 1_000_000
    max_epochs: float = 1.0
    """Most passes the target run may make over any domain, for sampled proxies and the optimized mixture
    alike: 1 = no domain repeats, so each domain's data limits the mixture (the paper's "infinite data"
    caveat, enforced)."""
    regressor: str = "auto"
    """`regmix fit --regressor`: auto (best CV Spearman), linear, lightgbm, gp or ensemble."""
    arm_names: tuple[str, ...] = ("regmix", "natural", "uniform", "best_proxy", "entropy", "bimix")
    """Target-model arms to train: any of :data:`ARMS` (``active`` and ``random_subset`` are opt-in: they take
    the demo past 10 minutes on 2 cores)."""
    regmixd_stages: int = 2
    """Stages of the RegMix-D proxies and of the ``regmix_d`` arm's schedule (equal slices of the run)."""
    regmixd_regressor: str = "linear"
    """`regmix fit_trajectory --regressor` for the ``regmix_d`` arm: linear, lightgbm or gp."""
    active_initial: int = 6
    """``active`` arm: random proxies it starts from, the first ones of the main sweep (already trained there)."""
    active_batch: int = 3
    """``active`` arm: proxies proposed per round."""
    active_budget: int = 12
    """Proxies of the ``active`` arm in all, and of ``random_subset`` (the main sweep's first ones)."""
    compile: str = "auto"
    """`regmix sweep --compile` for every model the pipeline trains: auto (eager on CPU), on or off."""
    reuse_from: Path | None = None
    """`regmix sample --reuse`: the previous ``mixture.yaml`` whose unchanged domains keep their ratios (the
    ``reuse`` scenario); None samples every domain freely."""
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per recipe (``proxy``/``target``): dotted key -> value applied to the working copy (``--quick``)."""
    timings: dict[str, float] = field(default_factory=dict)
    _recipes: dict[str, Path] = field(default_factory=dict, repr=False)

    @contextmanager
    def stage(self, name: str):
        print(f"\n=== regmix demo: {name}", flush=True)
        t0 = time.perf_counter()
        yield
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0
        print(f"=== {name}: {self.timings[name]:.1f} s", flush=True)

    def check(self) -> None:
        """Refuse settings that would fail at a later stage, before anything is built or trained (all at once)."""
        from regmix_plugin.models.regressors import MIN_CV_RUNS

        problems = []
        unknown = [a for a in self.arm_names if a not in ARMS]
        if unknown:
            hint = " (the RegMix-D arm is added with --regmix_d true)" if "regmix_d" in unknown else ""
            problems.append(f"--arms: unknown arm(s) {', '.join(unknown)}; known: {', '.join(ARMS)}{hint}")
        elif not self.arm_names or len(set(self.arm_names)) < len(self.arm_names):
            problems.append(
                f"--arms {list(self.arm_names)} must name each arm at most once and at least one of: {', '.join(ARMS)}"
            )
        if self.proxies < MIN_CV_RUNS:
            problems.append(
                f"--proxies {self.proxies}: the fit needs at least {MIN_CV_RUNS} proxy runs; give "
                f"--proxies {MIN_CV_RUNS} or more"
            )
        if self.workers < 1:
            problems.append(f"--workers must be >= 1 (parallel training processes), got {self.workers}")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def for_demo(
        cls, out_dir: Path, raw: Path, workers: int, seed: int, quick: bool = False, proxies: int | None = None, **kw
    ) -> Pipeline:
        """The demo's pipeline on the embedded corpus: its target, its proxy and target recipes, ``--quick``'s toy
        sizes and a ``--proxies`` override (``regmix demo``'s arms and its ``reuse`` scenario alike)."""
        from regmix_plugin.demo.corpus import DEMO_TARGET
        from regmix_plugin.resources import recipe_path

        pipe = cls(
            out_dir=Path(out_dir),
            target=DEMO_TARGET,
            proxy_recipe=recipe_path("demo/proxy.yaml"),
            target_recipe=recipe_path("demo/target.yaml"),
            raw=Path(raw),
            workers=workers,
            seed=seed,
            **kw,
        )
        if quick:
            pipe.make_quick()
        if proxies is not None:
            pipe.proxies = proxies
        return pipe

    def make_quick(self) -> None:
        """Toy sizes (``--quick``): 12 proxies, short runs, few validation tokens; the same path in minutes."""
        self.proxies, self.eval_points, self.val_tokens, self.target_val_tokens = 12, 1, 4096, 8192
        self.n_candidates = 20_000
        self.active_initial, self.active_batch, self.active_budget = 4, 1, 6
        self.overrides = {
            "proxy": {"train.max_tokens": 10 * 8 * 128, "data.init_args.max_tokens": 10 * 8 * 128},
            "target": {"train.max_tokens": 20 * 16 * 128, "data.init_args.max_tokens": 20 * 16 * 128},
        }

    # ---------------------------------------------------------------------------------------- stages
    def tokenizer_and_data(self) -> None:
        from regmix_plugin.commands.prepare import prepare
        from regmix_plugin.demo.corpus import read_texts
        from regmix_plugin.tokenizer import train_tokenizer

        tok = self.out_dir / "tokenizer"
        with self.stage("tokenizer"):
            if not (tok / "tokenizer.json").is_file():  # deterministic; kept so the prepared data stays valid
                texts = list(read_texts(self.raw))
                if self.val_raw is not None:
                    texts += list(read_texts(self.val_raw))
                train_tokenizer(texts, tok, vocab_size=self.vocab_size)
        with self.stage("prepare"):
            prepare(
                source=str(self.raw),
                val_source=str(self.val_raw) if self.val_raw else None,
                tokenizer_dir=tok,
                out_dir=self.out_dir / "data",
                val_fraction=self.val_fraction,
                num_workers=self.workers,
            )

    def working_recipe(self, kind: str) -> Path:
        """The shipped recipe with this run's paths (and ``overrides``), as ``out_dir/recipes/<kind>_template.yaml``.

        Written once per pipeline; later calls return the same file.
        """
        if kind in self._recipes:
            return self._recipes[kind]
        src = self.proxy_recipe if kind == "proxy" else self.target_recipe
        text = src.read_text().replace("demo_out/", f"{self.out_dir}/")
        config = yaml.safe_load(text)
        config["data"]["init_args"]["data_path"] = str(self.out_dir / "data")
        config["tokenizer_dir"] = str(self.out_dir / "tokenizer")
        config["model_config"]["vocab_size"] = config["model_config"]["padded_vocab_size"] = self.vocab_size
        for key, value in self.overrides.get(kind, {}).items():
            node = config
            *parents, last = key.split(".")
            for p in parents:
                node = node[p]
            node[last] = value
        if yaml.safe_load(text) != config:  # keep the shipped comments unless something had to change
            text = yaml.safe_dump(config, sort_keys=False)
        path = self.out_dir / "recipes" / f"{kind}_template.yaml"
        write_text(path, f"# Working copy of {src} for {self.out_dir}, written by `regmix demo`.\n" + text)
        self._recipes[kind] = path
        return path

    def target_tokens(self) -> int:
        return int(yaml.safe_load(self.working_recipe("target").read_text())["train"]["max_tokens"])

    def constraints(self):
        """The demo's epoch bound at the target run's length: the ``--constraints`` of every planner it runs."""
        from regmix_plugin.weights import ConstraintArgs

        return ConstraintArgs(target_tokens=self.target_tokens(), max_epochs=self.max_epochs)

    def proxy_sweep(self) -> Path:
        from regmix_plugin.commands.sample import sample
        from regmix_plugin.commands.sweep import EvalArgs, LocalArgs, sweep

        with self.stage("sample"):
            sample(
                data_path=self.out_dir / "data",
                out=self.out_dir / "mixtures.csv",
                n=self.proxies,
                constraints=self.constraints(),
                seed=self.seed,
                **({"reuse": self.reuse_from} if self.reuse_from else {}),
            )
        with self.stage("sweep"):
            sweep(
                mixtures=self.out_dir / "mixtures.csv",
                data_path=self.out_dir / "data",
                recipe=self.working_recipe("proxy"),
                out_dir=self.out_dir / "sweep",
                eval=EvalArgs(points=self.eval_points, val_tokens=self.val_tokens),
                local=LocalArgs(workers=self.workers),
                data_num_workers=0,
                compile=self.compile,
            )
        return self.out_dir / "sweep" / "results.csv"

    def schedule_path(self, name: str = "regmix_d") -> Path:
        return self.out_dir / ("schedule.yaml" if name == "regmix_d" else f"schedule_{name}.yaml")

    def regmix_d_schedule(self, objective: str = "joint", name: str = "regmix_d", pessimism: float = 1.0) -> list[dict]:
        """RegMix-D offline: staged proxies (their own sweep), `fit_trajectory`, `schedule`; returns the stages.

        ``objective`` and ``pessimism`` are `regmix schedule --search.*`; ``name`` the arm (its schedule file and runs).
        """
        from regmix_plugin.commands.fit_trajectory import fit_trajectories
        from regmix_plugin.commands.sample import sample
        from regmix_plugin.commands.schedule import schedule
        from regmix_plugin.commands.sweep import EvalArgs, LocalArgs, sweep
        from regmix_plugin.formats.schedule import read_schedule
        from regmix_plugin.models.schedule_search import SearchArgs
        from regmix_plugin.models.trajectory import trajectories_from_records

        staged = self.out_dir / "regmix_d"
        with self.stage("sample (staged)"):
            sample(
                data_path=self.out_dir / "data",
                out=staged / "mixtures.csv",
                n=self.proxies,
                stages=self.regmixd_stages,
                constraints=self.constraints(),
                seed=self.seed,
            )
        with self.stage("sweep (staged)"):
            sweep(
                mixtures=staged / "mixtures.csv",
                data_path=self.out_dir / "data",
                recipe=self.working_recipe("proxy"),
                out_dir=staged / "sweep",
                eval=EvalArgs(points=self.eval_points, val_tokens=self.val_tokens),
                local=LocalArgs(workers=self.workers),
                data_num_workers=0,
                compile=self.compile,
            )
        with self.stage("fit_trajectory"):
            from regmix_plugin.formats.sweep_records import read_records

            trajs, wd, ld = trajectories_from_records(read_records(staged / "sweep"))
            fit_trajectories(
                trajs,
                wd,
                ld,
                f"val_loss/{self.target}",
                "auto",
                self.regmixd_regressor,
                staged / "trajectory",
                min(5, len(trajs) // 2),
                self.seed,
                source={"sweep": str(staged / "sweep")},
            )
        with self.stage("schedule"):
            schedule(
                model=staged / "trajectory",
                out=self.schedule_path(name),
                stages=self.regmixd_stages,
                data_path=self.out_dir / "data",
                constraints=self.constraints(),
                search=SearchArgs(
                    n_candidates=min(self.n_candidates, 100_000),
                    seed=self.seed,
                    objective=objective,
                    pessimism=pessimism,
                ),
            )
        return [
            {"weights": st.weights, **({"until_fraction": st.until_fraction} if st.until_fraction else {})}
            for st in read_schedule(self.schedule_path(name)).stages
        ]

    def train_regmix_d(self, stages: list[dict], name: str = "regmix_d") -> dict[str, float]:
        """The ``regmix_d`` arm (or ``name``): its recipe from its schedule, trained as a one-run staged sweep."""
        from regmix_plugin.commands.recipe import recipe
        from regmix_plugin.commands.sweep import EvalArgs, LocalArgs, sweep
        from regmix_plugin.formats.mixture_table import write_mixtures
        from regmix_plugin.formats.sweep_records import read_records

        template = self.working_recipe("target")
        with self.stage("recipes"):
            recipe(mixture=self.schedule_path(name), template=template, out=self.out_dir / "recipes" / f"{name}.yaml")
        domains = sorted(stages[0]["weights"])
        write_mixtures(
            self.out_dir / "arms" / f"{name}.csv", {name: [st["weights"] for st in stages]}, domains, stages=len(stages)
        )
        with self.stage("target models"):
            sweep(
                mixtures=self.out_dir / "arms" / f"{name}.csv",
                data_path=self.out_dir / "data",
                recipe=template,
                out_dir=self.out_dir / "arms" / f"runs_{name}",
                local=LocalArgs(workers=1),
                eval=EvalArgs(points=0, val_tokens=self.target_val_tokens),
                compile=self.compile,
            )
        return _final_losses(read_records(self.out_dir / "arms" / f"runs_{name}")[name])

    def fit_and_optimize(self, results: Path, also: list[Path] | None = None, name: str = "") -> dict:
        """`regmix fit` then `regmix optimize`; returns the chosen ``mixture.yaml`` (as read).

        ``also``: earlier sweeps whose valid runs the fit adds (`regmix fit --also`); ``name`` suffixes the model
        directory and mixture file (``model_<name>``, ``mixture_<name>.yaml``) so a variant keeps its own.
        """
        from regmix_plugin.commands.fit import fit
        from regmix_plugin.commands.optimize import optimize
        from regmix_plugin.formats.mixture_yaml import read_mixture

        suffix = f"_{name}" if name else ""
        model, mixture = self.out_dir / f"model{suffix}", self.out_dir / f"mixture{suffix}.yaml"
        with self.stage(f"fit{suffix}"):
            fit(
                results=results,
                target=f"val_loss/{self.target}",
                regressor=self.regressor,
                out=model,
                seed=self.seed,
                also=also,
            )
        with self.stage(f"optimize{suffix}"):
            optimize(
                model=model,
                out=mixture,
                data_path=self.out_dir / "data",
                constraints=self.constraints(),
                n_candidates=self.n_candidates,
                seed=self.seed,
            )
        return read_mixture(mixture)

    def entropy_mixture(self) -> dict:
        """`regmix entropy` under the demo's epoch bound: no proxies needed."""
        from regmix_plugin.commands.entropy import entropy
        from regmix_plugin.formats.mixture_yaml import read_mixture

        with self.stage("entropy"):
            entropy(
                data_path=self.out_dir / "data",
                out=self.out_dir / "mixture_entropy.yaml",
                constraints=self.constraints(),
                seed=self.seed,
            )
        return read_mixture(self.out_dir / "mixture_entropy.yaml")

    def bimix_mixture(self, results: Path) -> dict:
        """`regmix fit --regressor bimix` on the proxies' trajectories, at the target model's length, then
        `regmix optimize`, which solves the law directly.

        The target is one domain's loss, so the law uses every proportion (``--bimix_proportions all``): the
        published form, driven by the target's own proportion alone, would put every token on it.
        """
        from regmix_plugin.commands.fit import fit
        from regmix_plugin.commands.optimize import optimize
        from regmix_plugin.formats.mixture_yaml import read_mixture

        with self.stage("bimix"):
            fit(
                results=results,
                target=f"val_loss/{self.target}",
                regressor="bimix",
                bimix_proportions="all",
                horizon_tokens=self.target_tokens(),
                out=self.out_dir / "model_bimix",
                seed=self.seed,
            )
            optimize(
                model=self.out_dir / "model_bimix",
                out=self.out_dir / "mixture_bimix.yaml",
                data_path=self.out_dir / "data",
                constraints=self.constraints(),
                n_candidates=min(self.n_candidates, 100_000),
                seed=self.seed,
            )
        return read_mixture(self.out_dir / "mixture_bimix.yaml")

    def arms(self, regmix: dict, results: Path) -> dict[str, dict[str, float]]:
        """Arm name -> weights for every arm of ``arm_names`` (see :data:`ARMS`)."""
        from regmix_plugin.demo.active import active_mixture, random_subset_mixture
        from regmix_plugin.formats.manifest import read_manifest
        from regmix_plugin.formats.results import read_results

        self.check()
        manifest = read_manifest(self.out_dir / "data")
        train = manifest.train_domains()
        every = {
            "regmix": lambda: regmix["weights"],
            "natural": manifest.natural_weights,
            "uniform": lambda: {d: 1 / len(train) for d in train},
            "best_proxy": lambda: _best_run(read_results(results), f"val_loss/{self.target}"),
            "entropy": lambda: self.entropy_mixture()["weights"],
            "bimix": lambda: self.bimix_mixture(results)["weights"],
            "active": lambda: active_mixture(self)["weights"],
            "random_subset": lambda: random_subset_mixture(self, results)["weights"],
        }
        out = {}
        for arm in self.arm_names:
            weights = every[arm]()
            out[arm] = {d: weights.get(d, 0.0) for d in train}
        return out

    def train_arms(self, arms: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        """Emit each arm's recipe with `regmix recipe`, then train them (two at a time) and score every domain."""
        from regmix_plugin.commands.recipe import recipe
        from regmix_plugin.commands.sweep import EvalArgs, LocalArgs, sweep
        from regmix_plugin.formats.mixture_table import write_mixtures
        from regmix_plugin.formats.mixture_yaml import write_mixture
        from regmix_plugin.formats.sweep_records import read_records

        template = self.working_recipe("target")
        with self.stage("recipes"):
            for arm, weights in arms.items():
                mixture = self.out_dir / MIXTURE_FILES.get(arm, f"arms/{arm}.yaml")
                if arm not in MIXTURE_FILES:
                    write_mixture(mixture, {"weights": weights}, header=f"The demo's {arm} arm.")
                recipe(mixture=mixture, template=template, out=self.out_dir / "recipes" / f"{arm}.yaml")
        domains = sorted(next(iter(arms.values())))
        write_mixtures(self.out_dir / "arms" / "mixtures.csv", arms, domains)
        with self.stage("target models"):
            sweep(
                mixtures=self.out_dir / "arms" / "mixtures.csv",
                data_path=self.out_dir / "data",
                recipe=template,
                out_dir=self.out_dir / "arms" / "runs",
                eval=EvalArgs(points=0, val_tokens=self.target_val_tokens),
                local=LocalArgs(workers=self.workers),
                compile=self.compile,
            )
        records = read_records(self.out_dir / "arms" / "runs")
        return {arm: _final_losses(records[arm]) for arm in arms if arm in records}


def _best_run(table, column: str) -> dict[str, float]:
    """The mixture of the proxy run with the lowest value of ``column``."""
    import numpy as np

    i = int(np.nanargmin(table.metrics[column]))
    return {d: float(w) for d, w in zip(table.domains, table.weights[i], strict=True)}


def _final_losses(record) -> dict[str, float]:
    """Per-domain losses at the end of a sweep run (its record's ``final`` eval point)."""
    if record.status != "done":
        raise RuntimeError(f"target-model run {record.run_id} failed: {record.error}")
    return next(p["losses"] for p in record.losses if p["final"])
