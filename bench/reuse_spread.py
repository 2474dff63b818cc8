"""Reuse at a quarter of the proxies vs a full recomputation, over seeds: the demo's ``reuse`` scenario, N times.

    python bench/reuse_spread.py --out_dir /tmp/reuse_bench --seeds 0 1 2
    python bench/reuse_spread.py --out_dir /tmp/reuse_bench --seeds 0 1 2 --sweeps_only   # the costly part first

Each seed runs ``regmix demo --scenario reuse`` (its own corpus draw, samplers, fits and optimizers) in
``OUT_DIR/seed<k>``: version 1 without ``licenses`` (48 proxies), a full recomputation on version 2 (48 proxies),
reuse of version 1's mixture (12 proxies), reuse plus version 1's runs (``fit --also``), and the three chosen
mixtures trained as target models. It prints each seed's target losses and margins, then the full
recomputation's seed-to-seed spread, the yardstick the margins are read against. Every stage resumes, so
``--sweeps_only`` (version 1's and the full recomputation's sweeps) can run ahead and the rest later.
About 10-15 minutes a seed on 2 free cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="toy sizes (the wiring, not a measurement)")
    parser.add_argument("--sweeps_only", action="store_true")
    parser.add_argument(
        "--target_seeds",
        type=int,
        nargs="*",
        default=[],
        help="also train each seed's chosen mixtures with these target-model seeds (model init and data order): "
        "the target model's own noise, on the same corpus",
    )
    args = parser.parse_args()
    from regmix_plugin.demo.reuse import NEW_DOMAIN, corpora, pipelines, reuse_demo

    t0 = time.perf_counter()
    summaries = {}
    for seed in args.seeds:
        out = args.out_dir / f"seed{seed}"
        if args.sweeps_only:
            v1, full, reuse = pipelines(out, args.quick, None, args.workers, seed, NEW_DOMAIN)
            corpora(v1, full, reuse, NEW_DOMAIN, args.quick)
            v1.proxy_sweep()
            full.proxy_sweep()
        else:
            summaries[seed] = reuse_demo(out, args.quick, None, args.workers, seed, NEW_DOMAIN)
    val_tokens = 8192 if args.quick else 65536  # the demo's target_val_tokens
    retrained = {seed: retrain(args.out_dir / f"seed{seed}", args.target_seeds, val_tokens) for seed in summaries}
    wall = time.perf_counter() - t0
    if args.sweeps_only:
        print(f"sweeps of seeds {args.seeds}: {wall:.0f} s")
        return
    print("\n| seed | full | reuse | reuse + --also | margin reuse | margin reuse + --also |")
    print("|---:|---:|---:|---:|---:|---:|")
    for seed, s in summaries.items():
        loss = {r["arm"]: r["target_loss"] for r in s["arms"]}
        print(
            f"| {seed} | {loss['full']:.4f} | {loss['reuse']:.4f} | {loss['reuse_also']:.4f} | "
            f"{s['margin_reuse']:+.4f} | {s['margin_reuse_also']:+.4f} |"
        )
    stats = {}
    for arm in ("full", "reuse", "reuse_also"):
        values = [next(r["target_loss"] for r in s["arms"] if r["arm"] == arm) for s in summaries.values()]
        stats[arm] = {
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else float("nan"),
            "range": max(values) - min(values),
        }
        print(f"{arm}: mean {stats[arm]['mean']:.4f}, std {stats[arm]['std']:.4f}, range {stats[arm]['range']:.4f}")
    for key in ("margin_reuse", "margin_reuse_also"):
        margins = [s[key] for s in summaries.values()]
        print(f"{key}: mean {statistics.fmean(margins):+.4f}, per seed {', '.join(f'{m:+.4f}' for m in margins)}")
    for seed, by_target_seed in retrained.items():
        for ts, loss in by_target_seed.items():
            print(
                f"seed {seed}, target-model seed {ts}: full {loss['full']:.4f}, reuse {loss['reuse']:.4f} "
                f"({loss['reuse'] - loss['full']:+.4f}), reuse + --also {loss['reuse_also']:.4f} "
                f"({loss['reuse_also'] - loss['full']:+.4f})"
            )
    print(f"wall time: {wall:.0f} s")
    out = {"seeds": summaries, "stats": stats, "retrained": retrained, "wall_s": wall}
    (args.out_dir / "spread.json").write_text(json.dumps(out))


def retrain(seed_dir: Path, target_seeds: list[int], val_tokens: int) -> dict[int, dict[str, float]]:
    """Each arm's target model again with another model/data seed: ``{target seed: {arm: target loss}}``."""
    import yaml

    from regmix_plugin.commands.sweep import EvalArgs, LocalArgs, sweep
    from regmix_plugin.formats.sweep_records import read_records

    full = seed_dir / "v2_full"
    template = yaml.safe_load((full / "recipes" / "target_template.yaml").read_text())
    summary = json.loads((seed_dir / "summary.json").read_text())
    out = {}
    for ts in target_seeds:
        template["seed"] = template["data"]["init_args"]["seed"] = ts
        recipe = full / "recipes" / f"target_template_seed{ts}.yaml"
        recipe.write_text(yaml.safe_dump(template, sort_keys=False))
        runs = full / "arms" / f"runs_seed{ts}"
        sweep(
            mixtures=full / "arms" / "mixtures.csv",
            data_path=full / "data",
            recipe=recipe,
            out_dir=runs,
            eval=EvalArgs(points=0, val_tokens=val_tokens),
            local=LocalArgs(workers=2),
        )
        records = read_records(runs)
        out[ts] = {
            arm: next(p for p in records[arm].losses if p["final"])["losses"][summary["target"]] for arm in records
        }
    return out


if __name__ == "__main__":
    main()
