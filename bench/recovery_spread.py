"""How much the recovery test's asserted figures move when the proxies' numerics change, as on another machine.

Proxies are not bit-identical from one machine to another (other CPU kernels, another summation order). This
runs the whole chain of ``tests/test_recovery.py`` (the same corpus, sizes and seeds) once per numerics variant
and prints every figure the test asserts, each variant's value and the spread, next to the test's bound:

    python bench/recovery_spread.py --variants eager compiled threads2 --out_dir /tmp/spread

Variants: ``eager`` (what the test runs on CPU), ``compiled`` (``regmix sweep --compile on``: fused kernels),
``threads2`` (two torch threads per proxy: parallel reductions split differently). About 5 minutes each on 2
cores. The figures of each variant are also written to ``OUT_DIR/<variant>.json``.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out_dir", type=Path, required=True)
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
    names = list(results)
    print(f"\n{'figure':38s}" + "".join(f"{n:>10s}" for n in names) + f"{'spread':>10s}")
    for key in results[names[0]]:
        values = [results[n][key] for n in names]
        print(f"{key:38s}" + "".join(f"{v:10.4f}" for v in values) + f"{max(values) - min(values):10.4f}")


if __name__ == "__main__":
    main()
