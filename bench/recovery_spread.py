"""How much the recovery test's asserted figures move when the proxies' numerics change, as on another machine.

Proxies are not bit-identical from one machine to another (other CPU kernels, another summation order). This
runs the whole chain of ``tests/test_recovery.py`` (the same corpus, sizes and seeds) once per numerics variant
and prints every figure the test asserts, each variant's value and the spread, next to the test's bound:

    python bench/recovery_spread.py --variants eager compiled threads2 --noise_draws 8 --out_dir /tmp/spread

Variants: ``eager`` (what the test runs on CPU), ``compiled`` (``regmix sweep --compile on``: fused kernels),
``threads2`` (two torch threads per proxy: parallel reductions split differently). About 5 minutes each on 2
cores. The figures of each variant are also written to ``OUT_DIR/<variant>.json``.

Those variants move the proxies' losses by about 1e-6. ``--noise_draws N`` then takes the first variant's sweep
and adds Gaussian noise of ``--noise`` nats (default 0.005, thousands of times that drift) to every proxy loss,
N times, and re-runs everything after the sweep (fit, optimize, the laws): a deliberately pessimistic stand-in
for another machine's proxies (about 30 s a draw; the target models are not retrained, so the loss gain is not
in these rows).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

VARIANTS = {"eager": ("auto", "1"), "compiled": ("on", "1"), "threads2": ("auto", "2")}


def figures(summary: dict) -> dict[str, float]:
    """The asserted (and the reported) numbers of tests/test_recovery.py, flat."""
    laws = summary["laws"]
    out = {
        "l1 (regmix, gp)": summary["l1"],
        "recovered s3": summary["recovered"]["s3"],
        "cv_spearman (gp)": summary["cv_spearman"],
        "loss gain uniform - regmix": summary["target_loss"]["uniform"] - summary["target_loss"]["regmix"],
        "bimix l1": laws["bimix"]["l1"],
        "bimix spearman vs exact loss": laws["bimix"]["true_loss_spearman"],
        "bimix oof spearman": laws["bimix"]["oof_spearman"],
        "bimix extrapolation error": laws["bimix"]["extrapolation"]["mean_relative_error"],
        "bimix_sources extrapolation error": laws["bimix_sources"]["extrapolation"]["mean_relative_error"],
        "min broken extrapolation error": min(laws["bimix"]["broken_extrapolation"].values()),
        "mixing_law l1 (reported only)": laws["mixing_law"]["l1"],
    }
    return {k: float(v) for k, v in out.items()}


def noise_draw(base: Path, out: Path, sigma: float, seed: int) -> dict[str, float]:
    """Everything after the sweep of ``base`` (a finished variant), on its proxy losses plus N(0, sigma) noise."""
    import csv

    import numpy as np
    from synthetic import DEFAULT_ALPHA
    from test_recovery import analyse, recovery_pipeline

    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "data").exists():
        (out / "data").symlink_to((base / "run" / "data").resolve())
    with open(base / "run" / "sweep" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key, value in row.items():
            if key.startswith("val_loss/") and value not in ("", None):
                row[key] = repr(float(value) + sigma * rng.standard_normal())
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    pipe = recovery_pipeline(base, out_dir=out)
    summary, _ = analyse(pipe, out / "results.csv", DEFAULT_ALPHA, base / "synthetic")
    summary["target_loss"] = {"regmix": float("nan"), "uniform": float("nan")}
    return {k: v for k, v in figures(summary).items() if not k.startswith("loss gain")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out_dir", type=Path, required=True)
    parser.add_argument("--noise_draws", type=int, default=0)
    parser.add_argument("--noise", type=float, default=0.005)
    args = parser.parse_args()
    from test_recovery import recovery_summary

    results = {}
    for name in args.variants:
        compile, threads = VARIANTS[name]
        saved = args.out_dir / f"{name}.json"
        if saved.is_file():
            results[name] = json.loads(saved.read_text())
            continue
        os.environ["OMP_NUM_THREADS"] = threads  # read by each proxy's worker process when it starts
        t0 = time.perf_counter()
        summary = recovery_summary(args.out_dir / name, compile=compile)
        results[name] = {**figures(summary), "wall_s": time.perf_counter() - t0}
        args.out_dir.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(results[name], indent=1))
    for k in range(args.noise_draws):
        saved = args.out_dir / f"noise{k}.json"
        if not saved.is_file():
            saved.write_text(
                json.dumps(
                    noise_draw(args.out_dir / args.variants[0], args.out_dir / f"noise{k}", args.noise, seed=k),
                    indent=1,
                )
            )
        results[f"noise{k}"] = json.loads(saved.read_text())
    names = list(results)
    print(f"\n{'figure':38s}" + "".join(f"{n:>10s}" for n in names) + f"{'spread':>10s}")
    for key in results[names[0]]:
        values = [results[n][key] for n in names if key in results[n]]
        print(f"{key:38s}" + "".join(f"{v:10.4f}" for v in values) + f"{max(values) - min(values):10.4f}")


if __name__ == "__main__":
    main()
