"""Proxies per GPU-hour for the paper's 1M proxy through `regmix sweep`: plain loss vs fused, then packing.

    .venv/bin/python bench/gpu_proxy_throughput.py [--steps 20] [--pack 2 4] [--micro_batch_size 16]

Needs a CUDA GPU (and ``pip install 'regmix-plugin[gpu]'`` for the fused rows); without one it says so and
exits 0. It builds a synthetic prepared corpus itself (three domains of uniformly random token ids below the
proxy's vocabulary of 50432, written with the litdata writer ``regmix prepare`` uses), shortens
``recipes/pile/proxy_1m.yaml`` to ``--steps`` optimizer steps of 512 x 2048 tokens (logging every step, one
final eval point), and runs it through ``regmix sweep`` twice in one invocation: ``--fused_loss off`` and
``--fused_loss on``. For each it prints, from the run records:

* steady-state tokens/s: the median of LitGPT's rolling rate over its last 5 logged steps, so torch.compile and
  the first steps are not in it;
* peak GPU memory of the proxy process (training and scoring);
* proxies per GPU-hour at the paper's 1B tokens (1000 steps x 1,048,576 tokens);
* fused/plain, both measured in this run.

Then it sweeps k = ``--pack`` proxies at once on the one GPU with the fused path (``--local.workers k``) and
prints their summed tokens/s and whether packing adds throughput over one fused proxy. Random tokens make the
losses meaningless; only speed and memory are measured. ``--cpu_smoke`` runs the same code on CPU with a tiny
model so the script itself can be checked without a GPU; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

TOKENS_1B = 1000 * 512 * 2048  # the paper's proxy budget: 1000 steps of 512 x 2048 tokens
DOMAINS = ("alpha", "beta", "gamma")


def build_corpus(root: Path, vocab: int, train_tokens: int, val_tokens: int, seed: int = 0) -> tuple[Path, Path]:
    """A prepared corpus of random token ids (manifest + litdata chunks, as `regmix prepare` writes) + tokenizer."""
    from regmix_plugin.commands.prepare import _write_split
    from regmix_plugin.formats.manifest import DomainStats, Manifest, SplitStats
    from regmix_plugin.tokenizer import tokenizer_hash, train_tokenizer

    # Only the tokenizer's hash matters (the sweep checks the corpus was made with it); the ids are random.
    tok = train_tokenizer(["random token ids for a throughput bench"] * 4, root / "tokenizer", vocab_size=64)
    rng = np.random.default_rng(seed)
    data, tmp = root / "data", root / "npy"
    tmp.mkdir(parents=True)
    manifest = Manifest(tokenizer_hash=tokenizer_hash(tok), vocab_size=vocab, domains={})
    for d in DOMAINS:
        stats = DomainStats(sources=[d])
        for split, n in (("train", train_tokens), ("val", val_tokens)):
            f = tmp / f"{d}.{split}.npy"
            np.save(f, rng.integers(0, vocab, size=n, dtype=np.uint16 if vocab <= 65535 else np.int32))
            _write_split([f], data / d / split, "64MB")
            setattr(stats, split, SplitStats(tokens=n, documents=1))
        manifest.domains[d] = stats
    manifest.write(data)
    return data, tok


def proxy_recipe(path: Path, steps: int, micro: int, smoke: bool) -> Path:
    """The paper's proxy recipe, shortened to ``steps`` optimizer steps and logging every step."""
    from regmix_plugin.resources import recipe_path

    cfg = yaml.safe_load(Path(recipe_path("pile/proxy_1m.yaml")).read_text())
    if smoke:  # CPU: a tiny model with the same structure, so that the script runs in seconds
        cfg["model_config"].update(
            block_size=64,
            vocab_size=512,
            padded_vocab_size=512,
            n_embd=32,
            n_head=2,
            n_query_groups=2,
            intermediate_size=64,
        )
        cfg["precision"] = "32-true"
        cfg["train"]["global_batch_size"] = micro
    seq, batch = cfg["model_config"]["block_size"], cfg["train"]["global_batch_size"]
    cfg["train"].update(max_tokens=steps * batch * seq, micro_batch_size=micro, log_interval=1, lr_warmup_steps=1)
    cfg["eval"].update(interval=10**6, max_iters=2)
    init = cfg["data"]["init_args"]
    init.update(max_tokens=cfg["train"]["max_tokens"], val_domains=None, weights={d: 1 / 3 for d in DOMAINS})
    if smoke:
        init["num_workers"] = 0
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run(root: Path, name: str, data: Path, tok: Path, recipe: Path, fused: str, k: int, val_tokens: int) -> list:
    """Sweep ``k`` proxies at once (one local worker each) and return their run records."""
    from regmix_plugin.commands.sweep import EvalArgs, LocalArgs, sweep
    from regmix_plugin.formats.mixture_table import write_mixtures
    from regmix_plugin.formats.sweep_records import read_records

    mixtures = root / f"{name}.csv"
    rng = np.random.default_rng(k)
    write_mixtures(
        mixtures,
        {f"p{i}": dict(zip(DOMAINS, map(float, rng.dirichlet(np.full(3, 4.0))), strict=True)) for i in range(k)},
        list(DOMAINS),
    )
    sweep(
        mixtures=mixtures,
        data_path=data,
        recipe=recipe,
        out_dir=root / name,
        tokenizer_dir=tok,
        eval=EvalArgs(points=0, val_tokens=val_tokens, batch_size=4),
        local=LocalArgs(workers=k),
        data_num_workers=None,
        fused_loss=fused,
    )
    return list(read_records(root / name).values())


def report(label: str, records: list) -> float | None:
    """Print one row (summed over packed proxies); return the summed tokens/s."""
    done = [r for r in records if r.status == "done" and r.tokens_per_s]
    failed = [r for r in records if r.status != "done"]
    if not done:
        print(f"{label:<22} no finished run; {failed[0].first_error_line() if failed else 'no record'}")
        return None
    rate = sum(r.tokens_per_s for r in done)
    peak = max((r.peak_memory_bytes or 0) for r in done) / 2**30
    per_hour = rate * 3600 / TOKENS_1B
    note = f"  ({len(failed)} of {len(records)} failed: {failed[0].first_error_line()})" if failed else ""
    print(f"{label:<22}{rate:>14,.0f}{peak:>14.1f}{per_hour:>18.2f}{note}")
    return rate


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per proxy (of 512 x 2048 tokens)")
    p.add_argument("--micro_batch_size", type=int, default=16)
    p.add_argument("--pack", type=int, nargs="*", default=[2, 4], help="proxies per GPU to try with the fused path")
    p.add_argument("--out_dir", type=Path, default=None, help="keep the corpus and sweeps here (default: a temp dir)")
    p.add_argument("--cpu_smoke", action="store_true", help="run on CPU with a tiny model (checks the script only)")
    args = p.parse_args(argv)

    import torch

    from regmix_plugin.pretrain.fused_loss import unavailable_reason

    if not torch.cuda.is_available() and not args.cpu_smoke:
        print("no CUDA device: this bench measures GPU throughput, so nothing was measured (exit 0)")
        return 0
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    fused_missing = unavailable_reason(need_cuda=not args.cpu_smoke)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out_dir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        recipe = proxy_recipe(root / "proxy.yaml", args.steps, args.micro_batch_size, args.cpu_smoke)
        cfg = yaml.safe_load(recipe.read_text())
        vocab, seq = cfg["model_config"]["padded_vocab_size"], cfg["model_config"]["block_size"]
        per_proxy = cfg["train"]["max_tokens"]
        # a domain drawn at weight <= 0.9 is read at most 4 times, well under MixtureData's max_epochs of 15
        need = max(per_proxy // 4, 4 * seq * 64)
        data, tok = build_corpus(root, vocab, train_tokens=need, val_tokens=64 * (seq + 1))
        val_tokens = 16 * seq
        print(
            f"device: {device}; proxy: {args.steps} steps x {cfg['train']['global_batch_size']} x {seq} tokens, "
            f"micro batch {args.micro_batch_size}, {cfg['precision']}"
        )
        header = f"{'path':<22}{'tokens/s':>14}{'peak GiB':>14}{'proxies/GPU-hour':>18}"
        print(header + "   (proxies per GPU-hour at 1B tokens; packed rows: summed over the proxies)")
        plain = report("plain (1 proxy)", run(root, "plain", data, tok, recipe, "off", 1, val_tokens))
        if fused_missing:
            print(f"fused: not measured: {fused_missing}")
            return 0
        fused = report("fused (1 proxy)", run(root, "fused", data, tok, recipe, "on", 1, val_tokens))
        if plain and fused:
            print(f"fused/plain tokens/s: {fused / plain:.2f}x (same invocation, same device)")
        for k in args.pack:
            packed = report(f"fused, {k} per GPU", run(root, f"fused-pack{k}", data, tok, recipe, "on", k, val_tokens))
            if packed and fused:
                print(
                    f"  packing {k}: {packed / fused:.2f}x one fused proxy's throughput "
                    f"({'adds' if packed > 1.05 * fused else 'does not add'} throughput)"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
