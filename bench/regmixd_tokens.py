"""RegMix-D against static RegMix with real tokens and real `litgpt pretrain`, on a corpus where order matters.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python bench/regmixd_tokens.py --premise   # the corpus' premise
    PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python bench/regmixd_tokens.py --seeds 3   # the protocol

The corpus (``tests/regmixd_corpus.py``) is built around a stated mechanism: the target's chain has little
data (one pass fills ~30% of the target run) and a tiny model's final blend favours what it saw last, so
spending it late should beat spending it evenly. ``--premise`` checks that with hand-written arms (it
validates the corpus, not the method). The protocol (:class:`regmixd_corpus.TokenProtocol`, fixed before it
was run) trains per seed: static RegMix (static proxy sweep -> `regmix fit` -> `regmix optimize`), offline
RegMix-D (staged proxy sweep -> `fit_trajectory` -> `regmix schedule`) and online RegMix-D
(``RegMixDController`` in a real `litgpt pretrain` target run), and prints each arm's target loss, the
margins and the wall times.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    from regmixd_corpus import TokenProtocol

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first_seed", type=int, default=0)
    ap.add_argument("--premise", action="store_true", help="train the hand-written arms of the corpus' premise")
    ap.add_argument("--out_dir", type=Path, default=None, help="keep everything here (default: a temp dir)")
    ap.add_argument(
        "--objective",
        nargs="+",
        default=["greedy"],
        choices=("greedy", "joint"),
        help="RegMix-D's search objective(s) (regmix schedule --search.objective, the controller's); "
        "several share each seed's proxy sweeps",
    )
    ap.add_argument(
        "--pessimism",
        type=float,
        nargs="+",
        default=[0.0],
        help="regmix schedule --search.pessimism and the controller's (default: the fixed protocol's 0; "
        "the product's default is 1); several share each seed's proxy sweeps",
    )
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    protocols = [TokenProtocol(objective=o, pessimism=p) for o in args.objective for p in args.pessimism]
    print(f"protocol: {protocols[0]} (objectives {args.objective}, pessimism {args.pessimism})", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out_dir or Path(tmp)
        quiet = contextlib.nullcontext() if args.verbose else contextlib.redirect_stdout(io.StringIO())
        if args.premise:
            t0 = time.perf_counter()
            with quiet:
                res = protocols[0].premise(root / "premise", seed=args.first_seed)
            print(
                f"premise (seed {args.first_seed}, scarce allowance {res['cap']:.3f}), target loss per arm "
                f"({time.perf_counter() - t0:.0f} s):"
            )
            for arm, loss in sorted(res["losses"].items(), key=lambda kv: kv[1]):
                print(f"  {arm:<20} {loss:.4f}   {res['arms'][arm]}")
            return
        print(
            "seed  objective/pessimism  regmix_static  regmix_d_offline  regmix_d_online  static-offline  "
            "online-offline  wall_s"
        )
        rows = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for protocol in protocols:
                t0 = time.perf_counter()
                with quiet:
                    r = protocol.run(root / f"seed{seed}", seed)
                r["wall_s"] = time.perf_counter() - t0
                r["config"] = f"{protocol.objective}/{protocol.pessimism:g}"
                rows.append(r)
                print(
                    f"{seed:>4}  {r['config']:<19}  {r['static']:.4f}         {r['offline']:.4f}            "
                    f"{r['online']:.4f}           {r['static'] - r['offline']:+.4f}         "
                    f"{r['online'] - r['offline']:+.4f}         {r['wall_s']:.0f}",
                    flush=True,
                )
                print(f"      mixtures: {r['mixtures']}", flush=True)
                print(f"      decisions: {r['decisions']}", flush=True)
                print(f"      timings (s, cumulative over this seed's runs): {r['timings']}", flush=True)
        for config in dict.fromkeys(r["config"] for r in rows):
            sel = [r for r in rows if r["config"] == config]
            static, offline, online = (np.array([r[k] for r in sel]) for k in ("static", "offline", "online"))
            print(
                f"{config}: mean static {static.mean():.4f}, offline {offline.mean():.4f}, online "
                f"{online.mean():.4f}; static-offline {(static - offline).mean():+.4f} (min "
                f"{(static - offline).min():+.4f}), online-offline {(online - offline).mean():+.4f}; offline below "
                f"static on {(offline < static).sum()}/{len(sel)} seeds, online <= offline on "
                f"{(online <= offline).sum()}/{len(sel)}"
            )
        print(f"total {sum(r['wall_s'] for r in rows):.0f} s")


if __name__ == "__main__":
    main()
