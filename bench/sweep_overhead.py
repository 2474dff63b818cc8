"""Per-run overhead of `regmix sweep`: its wall time against N x one proxy's training-loop time, in one run.

    .venv/bin/python bench/sweep_overhead.py [--runs 8] [--steps 100] [--eval_points 5] [--val_tokens 4096] \\
        [--threads 1] [--compile on off]

Overhead is everything but the training iterations: worker start, imports, torch.compile, data set-up,
checkpoints, per-domain evaluation, records and the table. The training-loop time of one proxy is measured
as the marginal cost of its iterations: T(2 x steps) - T(steps) for two warm in-process runs of the same
recipe (everything else cancels). The sweep then trains ``runs`` proxies with one local worker; per-run
overhead after the worker's first run = (sweep wall - time to the first record) / (runs - 1) - loop time.
Both are measured for each ``--compile`` mode (``regmix sweep --compile``: ``on`` is what ``litgpt pretrain``
always does, ``off`` trains eagerly), and the sweeps' wall-time ratio is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import tempfile
import time
from pathlib import Path

import yaml

WORDS = {
    "prose": "the a river city walked slowly under bright morning light people said quiet".split(),
    "code": "def return if else for in range import class self none true false print".split(),
    "math": "one two three plus minus equals times over root sum limit zero".split(),
}


def build(root: Path) -> tuple[Path, Path]:
    from regmix_plugin.commands.prepare import prepare
    from regmix_plugin.tokenizer import train_tokenizer

    rng = random.Random(0)
    tok = train_tokenizer([" ".join(w) for w in WORDS.values()] * 4, root / "tok", vocab_size=256)
    for d, pool in WORDS.items():
        (root / "raw" / d).mkdir(parents=True)
        with open(root / "raw" / d / "part.jsonl", "w") as f:
            for _ in range(400):
                f.write(json.dumps({"text": " ".join(rng.choice(pool) for _ in range(200))}) + "\n")
    prepare(source=[str(root / "raw")], tokenizer_dir=tok, out_dir=root / "data", val_fraction=0.1, num_workers=1)
    return root / "data", tok


def recipe(data: Path, tok: Path, steps: int) -> dict:
    micro, seq = 8, 64
    model = {
        "name": "bench",
        "block_size": seq,
        "vocab_size": 258,
        "padded_vocab_size": 258,
        "n_layer": 2,
        "n_head": 2,
        "n_query_groups": 2,
        "n_embd": 64,
        "intermediate_size": 128,
        "bias": False,
        "norm_class_name": "RMSNorm",
        "mlp_class_name": "LLaMAMLP",
        "rotary_percentage": 1.0,
        "parallel_residual": False,
    }
    return {
        "model_name": "bench",
        "model_config": model,
        "out_dir": "unused",
        "precision": "32-true",
        "data": {
            "class_path": "regmix_plugin.MixtureData",
            "init_args": {"data_path": str(data), "weights": {d: 1 / 3 for d in WORDS}, "num_workers": 0},
        },
        "train": {
            "save_interval": None,
            "log_interval": 10,
            "global_batch_size": micro,
            "micro_batch_size": micro,
            "max_tokens": steps * micro * seq,
            "max_norm": 1.0,
            "min_lr": 1e-3,
            "lr_warmup_steps": 1,
        },
        "eval": {"interval": 100000, "max_iters": 2, "final_validation": False},
        "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-3}},
        "devices": 1,
        "tokenizer_dir": str(tok),
        "logger_name": "csv",
        "seed": 42,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval_points", type=int, default=5)
    ap.add_argument("--val_tokens", type=int, default=4096)
    ap.add_argument("--compile", nargs="+", default=["on", "off"], choices=("on", "off"))
    args = ap.parse_args()

    from regmix_plugin.commands.sweep import EvalArgs, LocalArgs, sweep
    from regmix_plugin.commands.sweep.worker import setup_worker
    from regmix_plugin.formats.mixture_table import write_mixtures
    from regmix_plugin.litgpt_compat import eager_pretrain, run_pretrain

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data, tok = build(root)

        setup_worker(args.threads)
        (root / "proxy.yaml").write_text(yaml.safe_dump(recipe(data, tok, args.steps), sort_keys=False))
        mixes = {
            f"r{i:02d}": {"prose": (i + 1) / (args.runs + 1), "code": 1 - (i + 1) / (args.runs + 1), "math": 0.0}
            for i in range(args.runs)
        }
        write_mixtures(root / "mixtures.csv", mixes, sorted(WORDS))
        print(
            f"runs: {args.runs}, {args.steps} steps each, {args.eval_points} eval points + end, "
            f"{args.val_tokens} val tokens per domain per point"
        )
        walls = {}
        for mode in args.compile:
            # 1) the training loop of one proxy, measured in this process like a warm worker
            def timed(steps: int, i: int, mode=mode) -> float:
                cfg = recipe(data, tok, steps)
                cfg["out_dir"] = str(root / f"single-{mode}{i}")
                t = time.perf_counter()
                with (
                    contextlib.redirect_stdout(io.StringIO()),
                    contextlib.redirect_stderr(io.StringIO()),
                    eager_pretrain(mode == "off"),
                ):
                    run_pretrain(cfg)
                return time.perf_counter() - t

            first = timed(args.steps, 0)  # imports (first mode only), compile
            loops = [timed(2 * args.steps, 2 * i + 1) - timed(args.steps, 2 * i + 2) for i in range(2)]
            loop = max(1e-3, min(loops))

            # 2) the sweep: N proxies in one local worker (a fresh process: its first run pays imports, compile)
            t0 = time.time()
            counts = sweep(
                mixtures=root / "mixtures.csv",
                data_path=data,
                recipe=root / "proxy.yaml",
                out_dir=root / f"sweep-{mode}",
                local=LocalArgs(workers=1, threads=args.threads),
                eval=EvalArgs(points=args.eval_points, val_tokens=args.val_tokens),
                compile=mode,
            )
            wall = walls[mode] = time.time() - t0
            firsts = sorted(p.stat().st_mtime for p in (root / f"sweep-{mode}" / "runs").glob("*.json"))
            to_first = firsts[0] - t0
            per_run = (wall - to_first) / (args.runs - 1)
            print(f"--compile {mode}: {counts['done']} done")
            print(
                f"  first in-process run: {first:.1f} s; training loop of one proxy: {loop:.2f} s "
                "(T(2x steps) - T(steps), best of 2)"
            )
            print(
                f"  sweep wall: {wall:.1f} s = {to_first:.1f} s to the first record (worker start, imports, compile) "
                f"+ {args.runs - 1} x {per_run:.2f} s"
            )
            print(f"  sweep wall / (N x loop): {wall / (args.runs * loop):.2f}")
            print(
                f"  per-run overhead after the first run: {per_run - loop:.2f} s "
                f"({(per_run - loop) / per_run:.0%} of a run here)"
            )
        if {"on", "off"} <= set(walls):
            print(f"sweep wall, --compile off / on: {walls['off'] / walls['on']:.2f}")


if __name__ == "__main__":
    main()
