"""The demo's opt-in ``active`` and ``random_subset`` arms: RegMix on a quarter of the proxies, chosen actively or not.

``active`` runs `regmix sweep --active` from the main sweep's first ``active_initial`` proxies (copied, not
retrained) to ``active_budget`` proxies; ``random_subset`` fits the same regressor (gp) on the main sweep's first
``active_budget`` proxies. Both then run `regmix optimize`, like the ``regmix`` arm on all the proxies.
"""

from __future__ import annotations

from pathlib import Path


def active_mixture(pipe) -> dict:
    """The ``active`` arm: `regmix sweep --active` from the main sweep's first ``active_initial`` proxies to
    ``active_budget``, then `regmix optimize` on its last GP.

    Its starting runs are not retrained: their records are copied from the main sweep, which trained the same
    mixtures with the same recipe, data and seed (the loop's set-up check would refuse anything else).
    """
    import shutil

    from regmix_plugin.commands.sweep import EvalArgs, LocalArgs, sweep
    from regmix_plugin.commands.sweep.active import ActiveArgs
    from regmix_plugin.formats.mixture_table import read_mixtures, write_mixtures

    act = pipe.out_dir / "active"
    with pipe.stage("active sweep"):
        if not (act / "mixtures.csv").exists():
            rows = read_mixtures(pipe.out_dir / "mixtures.csv", "--mixtures")
            first = dict(list(rows.as_dict().items())[: pipe.active_initial])
            (act / "runs").mkdir(parents=True, exist_ok=True)
            for run_id in first:
                for suffix in (".json", ".log"):
                    shutil.copy2(pipe.out_dir / "sweep" / "runs" / f"{run_id}{suffix}", act / "runs")
            write_mixtures(act / "mixtures.csv", first, rows.domains)
        sweep(
            mixtures=act / "mixtures.csv",
            data_path=pipe.out_dir / "data",
            recipe=pipe.working_recipe("proxy"),
            out_dir=act,
            eval=EvalArgs(points=pipe.eval_points, val_tokens=pipe.val_tokens),
            local=LocalArgs(workers=pipe.workers),
            data_num_workers=0,
            compile=pipe.compile,
            active=True,
            loop=ActiveArgs(
                initial=pipe.active_initial,
                batch=pipe.active_batch,
                budget=pipe.active_budget,
                target=f"val_loss/{pipe.target}",
                constraints=pipe.constraints(),
                seed=pipe.seed,
            ),
        )
    last = max((act / "active").glob("round-*/model"))
    return _optimized(pipe, last, "active")


def random_subset_mixture(pipe, results: Path) -> dict:
    """The ``random_subset`` arm: `regmix fit --regressor gp` (the active loop's model) on the main sweep's first
    ``active_budget`` proxies, then `regmix optimize`."""
    import csv

    from regmix_plugin.commands.fit import fit
    from regmix_plugin.formats.results import write_results

    sub = pipe.out_dir / "random_subset"
    with open(results, newline="") as f:
        rows = list(csv.DictReader(f))[: pipe.active_budget]
    write_results(sub / "results.csv", rows)
    with pipe.stage("fit (random subset)"):
        fit(
            results=sub / "results.csv",
            target=f"val_loss/{pipe.target}",
            regressor="gp",
            out=sub / "model",
            seed=pipe.seed,
        )
    return _optimized(pipe, sub / "model", "random_subset")


def _optimized(pipe, model: Path, arm: str) -> dict:
    """`regmix optimize` on ``model`` into ``mixture_<arm>.yaml`` (the arm's entry of ``pipeline.MIXTURE_FILES``)."""
    from regmix_plugin.commands.optimize import optimize
    from regmix_plugin.formats.mixture_yaml import read_mixture

    with pipe.stage(f"optimize ({arm})"):
        optimize(
            model=model,
            out=pipe.out_dir / f"mixture_{arm}.yaml",
            data_path=pipe.out_dir / "data",
            constraints=pipe.constraints(),
            n_candidates=pipe.n_candidates,
            seed=pipe.seed,
        )
    return read_mixture(pipe.out_dir / f"mixture_{arm}.yaml")


def proxy_counts(pipe) -> dict[str, int]:
    """Proxy runs behind each arm's mixture (0: chosen without proxies)."""
    from regmix_plugin.formats.mixture_table import read_mixtures

    counts = {"regmix": pipe.proxies, "best_proxy": pipe.proxies, "bimix": pipe.proxies, "regmix_d": pipe.proxies}
    counts["random_subset"] = min(pipe.active_budget, pipe.proxies)
    if (pipe.out_dir / "active" / "mixtures.csv").exists():
        counts["active"] = len(read_mixtures(pipe.out_dir / "active" / "mixtures.csv", "--mixtures").ids)
    return counts
