"""``regmix demo``: the whole RegMix loop on an embedded corpus, on a CPU, with no downloads.

    regmix demo --out_dir demo_out            # ~48 proxies, 6 target-model arms, report.md
    regmix demo --out_dir /tmp/d --quick true # the same path at toy size (the test suite runs it)
    regmix demo --scenario reuse --out_dir demo_reuse  # opt-in: the corpus gains a domain; reuse vs recompute

An application over the user's commands (it may import them; no command imports it): ``corpus`` builds the
embedded corpus, :class:`~regmix_plugin.demo.pipeline.Pipeline` runs the stages, ``report`` writes
``report.md``. Works from a plain ``pip install``: its recipes ship inside the package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal


def demo(
    out_dir: Path = Path("demo_out"),
    quick: bool = False,
    proxies: int | None = None,
    workers: int = 2,
    seed: int = 0,
    arms: list[str] | None = None,
    regmix_d: bool = False,
    scenario: Literal["arms", "reuse"] = "arms",
    new_domain: str = "licenses",
) -> dict:
    """Run RegMix end to end on a corpus built from this Python installation and report the arms.

    Arguments:
        out_dir: Where everything goes (corpus, data, sweeps, model, recipes, report.md).
        quick: Toy sizes (12 proxies, short runs) for tests: the same path in about 2 minutes.
        proxies: Proxy runs to sweep; default 48 (12 with ``--quick``).
        workers: Parallel training processes (proxies and target arms).
        seed: Seed of the mixture sampler, the fit and the optimizer.
        arms: Target-model arms to train (default: the first six): regmix, natural, uniform, best_proxy, entropy
            (the training-free `regmix entropy` mixture), bimix (the BiMix law on the proxies' trajectories), and
            opt-in: active (RegMix on a quarter of the proxies, 12 of 48, chosen by `regmix sweep --active` from the
            first 6) and random_subset (RegMix on the first 12 proxies, the same gp regressor). They take `make
            demo` past 10 minutes on 2 cores, hence opt-in.
        regmix_d: Add the ``regmix_d`` arm (RegMix-D offline): a second sweep of as many 2-stage proxies,
            ``fit_trajectory``, ``schedule`` and one more target run. Off by default: it roughly doubles the
            proxy sweep, which takes the demo past 10 minutes on 2 cores.
        scenario: ``arms`` (the default: the arms above); ``reuse``: the corpus gains ``--new_domain``, and
            `regmix sample --reuse` with a quarter of the proxies is compared with a full recomputation, both
            trained as target models (``--arms`` and ``--regmix_d`` do not apply). See ``regmix_plugin.demo.reuse``.
        new_domain: ``reuse``: the demo domain that version 1 of the corpus lacks and version 2 adds.
    """
    if scenario == "reuse":
        from regmix_plugin.demo.reuse import reuse_demo

        return reuse_demo(Path(out_dir), quick, proxies, workers, seed, new_domain)
    from regmix_plugin.demo.corpus import build_demo_corpus
    from regmix_plugin.demo.pipeline import Pipeline
    from regmix_plugin.demo.report import write_report

    out_dir = Path(out_dir)
    pipe = Pipeline.for_demo(out_dir, out_dir / "raw", workers, seed, quick, proxies)
    if arms is not None:
        pipe.arm_names = tuple(arms)
    pipe.check()  # every flag, before the corpus is built or anything trains
    with pipe.stage("corpus"):
        caps = {d: 60_000 for d in ("code", "docs", "prose", "licenses", "math")} if quick else None
        build_demo_corpus(out_dir / "raw", max_chars=caps, seed=seed)
    pipe.tokenizer_and_data()
    results = pipe.proxy_sweep()
    chosen = pipe.fit_and_optimize(results)
    arms = pipe.arms(chosen, results)
    stages = pipe.regmix_d_schedule() if regmix_d else None
    losses = pipe.train_arms(arms)
    if stages is not None:
        from regmix_plugin.formats.mixture_table import split_run

        arms["regmix_d"] = split_run(stages)[0]  # the report's weights and epochs: the whole run's mixture
        losses["regmix_d"] = pipe.train_regmix_d(stages)
    summary = write_report(pipe, arms, losses, chosen)
    return summary
