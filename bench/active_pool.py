"""Active selection against random selection on the published RegMix pool: top-1 regret and top-10 overlap.

    python bench/active_pool.py --mixtures train_mixture_1m.csv --losses train_pile_loss_1m.csv

The pair is ``data/train_mixture_1m.csv`` and ``data/train_pile_loss_1m.csv`` of sail-sg/regmix (not shipped
here): 512 proxies of 1M parameters, read with :func:`regmix_plugin.formats.official.read_regmix_csv`.

Protocol (issue 19), written before the first run and run once; no setting below was chosen by its numbers:

* target ``val_loss/pile_cc``; the pool is the 512 runs, as ``regmix propose --candidates`` would see them
  (every pool row is new and inside the bounds: there are no constraints, and the script checks that the 512 rows
  are distinct at ``propose``'s 4-decimal rounding, so the pool mode's duplicate filter removes nothing but the
  runs already revealed);
* regressor: :class:`regmix_plugin.models.regressors.GPRegressor` with ``regmix fit --regressor gp``'s settings
  (``random_state`` 0, the default ``max_fit_runs`` 256), the same for every method;
* per seed (5 seeds, 0-4): 32 starting runs drawn at random from the pool (the same for active and random);
* **active**: fit the GP on the runs so far, choose the next 16 among the pool runs not yet revealed with the
  engine of ``regmix propose`` (:func:`regmix_plugin.models.acquisition.believer_batch` at its defaults:
  ``kappa`` = ``DEFAULT_KAPPA`` 1.96, ``min_l1`` = ``DEFAULT_MIN_L1`` 0.1), "train" them (reveal their true
  losses), repeat; the final models are the GP fitted on the first 64, 128 and 256 runs;
* **random**: the same regressor on the same 32 starting runs plus the first 32, 96 and 224 runs of one random
  permutation of the rest of the pool (nested subsets of 64, 128 and 256 runs);
* **all**: the same regressor on all 512 runs (one model: the budget is the whole pool);
* scores, on the pool only, of each final model's predicted means over all 512 pool runs: **top-1 regret** (the
  true loss of the run ranked best minus the pool's best true loss) and **top-10 overlap** (how many of the 10
  best-ranked runs are among the pool's 10 best by true loss);
* printed: mean and per-seed tables (budgets x methods) and the wall time. Goal reported against: active at 128
  at least as good as random at 512 ("all") in top-1 regret.

Protocol 2 (docs/fewer_proxies.md, fixed 2026-12-06 before its one run): the default of ``regmix propose`` and the
loop is now a TuRBO trust region, so ``active`` is that rule and the protocol-1 rule stays as the arm
``active_global``; nothing else changes (seeds, start, batches, budgets, GP, kappa, min_l1, scores):

* **active** (trust region): as above, but each batch is chosen by
  :func:`regmix_plugin.models.acquisition.trust_region_batch` among the unrevealed pool runs inside the box around
  the revealed run with the best posterior mean (pool mode of ``regmix propose``), its length starting at
  ``TRUST_INIT`` 0.8 and updated after every revealed batch by :class:`~regmix_plugin.models.acquisition.TrustRegion`
  (TuRBO's rules, d = 17 domains, q = 16), exactly as the loop replays it;
* **active_global**: the protocol-1 rule above (the whole pool every round), reported next to it.

``--test_mixtures``/``--test_losses`` (optional) add, once at the end and after every table above is printed, the
held-out Spearman between each final model's predicted target and the true target on a published test pair (active
and random at each budget as the mean over seeds with the per-seed values, and the GP on all 512), labelled
"held-out (decides nothing)": no choice above reads it. The pair used is ``data/test_mixture_60m.csv`` with
``data/test_pile_loss_1m.csv`` (sail-sg/regmix, commit 476a7b0), joined on their shared ``index`` column 1-256:

    python bench/active_pool.py --mixtures train_mixture_1m.csv --losses train_pile_loss_1m.csv \
        --test_mixtures test_mixture_60m.csv --test_losses test_pile_loss_1m.csv

sail-sg/regmix publishes no ``test_mixture_1m.csv``. Why the 60M file is taken as the 1M test mixtures: third-party
copies of the RegMix tables list a ``test_mixture_1m.csv`` of exactly 23,537 characters, the size of
``test_mixture_60m.csv``, next to ``test_pile_loss_1m.csv`` at its published 61,175; the RegMix paper trains its
1M and 60M held-out models on the same unseen mixtures; and with this pairing each domain's weight ranks the 1M
loss on that domain at Spearman -0.75 to -0.97 over the 256 rows, as on the training pair (-0.78 to -0.95),
against -0.11 to 0.16 under a shuffled pairing. Equal size is not equal content: the pairing is an inference.
The script refuses a test pair whose index columns differ.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

BUDGETS = (64, 128, 256)
METHODS = ("active", "active_global", "random")
PAIRING = (
    "test pair: --test_mixtures with --test_losses, joined on their index column; for sail-sg/regmix the 1M losses "
    "go with test_mixture_60m.csv (no test_mixture_1m.csv is published; third-party copies list one of its exact "
    "size, 23537 chars, and the paper trains its 1M and 60M held-out models on the same mixtures)"
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mixtures", required=True)
    parser.add_argument("--losses", required=True)
    parser.add_argument("--target", default="val_loss/pile_cc")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--start", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--test_mixtures")
    parser.add_argument("--test_losses")
    args = parser.parse_args()
    if bool(args.test_mixtures) != bool(args.test_losses):
        parser.error("--test_mixtures and --test_losses go together: give both or neither")
    from tqdm import tqdm

    from regmix_plugin.formats.official import read_regmix_csv
    from regmix_plugin.models.acquisition import (
        DEFAULT_KAPPA,
        DEFAULT_MIN_L1,
        TRUST_INIT,
        TrustRegion,
        believer_batch,
        trust_region_batch,
    )
    from regmix_plugin.models.regressors import GPRegressor
    from regmix_plugin.weights import largest_remainder

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = read_regmix_csv(args.mixtures, args.losses)
    X, y = data.weights, data.target_values(data.resolve_target(args.target))
    if not np.isfinite(y).all():
        raise SystemExit(f"{args.target}: {int((~np.isfinite(y)).sum())} pool runs have no value")
    if len({tuple(largest_remainder(w, 10**4)) for w in X}) != len(X):
        raise SystemExit("the pool has rows equal at 4 decimals: propose's pool mode would drop some")
    order = np.argsort(y)
    best10 = set(order[:10].tolist())
    print(f"pool: {len(y)} runs x {len(data.domains)} domains, target {args.target}, best {y.min():.4f}")

    def fit(idx):
        return GPRegressor(random_state=0).fit(X[idx], y[idx])

    def score(model):
        ranked = np.argsort(model.predict(X))
        return float(y[ranked[0]] - y.min()), len(best10 & set(ranked[:10].tolist()))

    rounds = (max(BUDGETS) - args.start) // args.batch
    fits_per_seed = 2 * (rounds + 1) + len(BUDGETS)
    regret = {(m, b): [] for m in METHODS for b in BUDGETS}
    overlap = {k: [] for k in regret}
    final = {}
    lengths = {}  # the trust region's length before each batch, per seed

    def pick(model, seen, region):
        """The next batch's pool indices: the trust-region rule (``region`` a TrustRegion) or the whole pool."""
        left = np.setdiff1d(np.arange(len(y)), seen)
        if region is None:
            picks, _, _ = believer_batch(model, X[left], args.batch, DEFAULT_KAPPA, 1.0, DEFAULT_MIN_L1)
            return left[picks]

        def choose(box):
            keep = np.ones(len(left), bool) if box is None else box.contains(X[left])
            return X[left[keep]], left[keep].tolist()

        _, ids, picks, _, _, _ = trust_region_batch(
            model, lambda w: w, X[seen], args.batch, DEFAULT_KAPPA, 1.0, DEFAULT_MIN_L1, region.length, choose
        )
        return np.array(ids)[picks]

    with tqdm(total=args.seeds * fits_per_seed + 1, desc="GP fits", unit="fit") as bar:
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            perm = rng.permutation(len(y))
            start, rest = perm[: args.start], perm[args.start :]
            for b in BUDGETS:  # random: the start plus a prefix of one permutation of the rest
                model = fit(np.concatenate([start, rest[: b - args.start]]))
                r, o = score(model)
                regret["random", b].append(r)
                overlap["random", b].append(o)
                final["random", b, seed] = model
                bar.update()
            for method in ("active", "active_global"):
                seen = list(start)
                region = TrustRegion(TRUST_INIT) if method == "active" else None
                while True:
                    model = fit(np.array(seen))
                    bar.update()
                    if len(seen) in BUDGETS:
                        r, o = score(model)
                        regret[method, len(seen)].append(r)
                        overlap[method, len(seen)].append(o)
                        final[method, len(seen), seed] = model
                    if len(seen) >= max(BUDGETS):
                        break
                    if region is not None:
                        lengths.setdefault(seed, []).append(region.length)
                    new = pick(model, np.array(seen), region)
                    if len(new) < args.batch:
                        raise SystemExit(f"seed {seed}: only {len(new)} picks at min_l1 {DEFAULT_MIN_L1}")
                    if region is not None:  # TuRBO's update once the batch is revealed
                        improved = TrustRegion.improved(float(y[seen].min()), float(y[new].min()))
                        region = region.after(improved, args.batch, X.shape[1])
                    seen += new.tolist()
            bar.set_postfix(seed=seed)
        model_all = fit(np.arange(len(y)))
        final["all", len(y), 0] = model_all
        bar.update()
    r_all, o_all = score(model_all)
    wall = time.perf_counter() - t0

    print(
        f"\n{args.seeds} seeds; start {args.start} random runs, batches of {args.batch}; kappa {DEFAULT_KAPPA}, "
        f"min_l1 {DEFAULT_MIN_L1}; scores on the {len(y)}-run pool\n"
    )
    print("top-1 regret (mean of seeds; lower is better) / top-10 overlap (mean; higher is better):\n")
    print("| runs | " + " | ".join(METHODS) + " |")
    print("|---|" + "---|" * len(METHODS))
    for b in BUDGETS:
        cells = [f"{np.mean(regret[m, b]):.4f} / {np.mean(overlap[m, b]):.1f}" for m in METHODS]
        print(f"| {b} | " + " | ".join(cells) + " |")
    print(f"| {len(y)} (all) | {r_all:.4f} / {o_all} (one model) |" + " |" * (len(METHODS) - 1))
    print(f"\nper seed (seeds 0-{args.seeds - 1}), top-1 regret / top-10 overlap:\n")
    print("| runs | method | " + " | ".join(f"seed {s}" for s in range(args.seeds)) + " |")
    print("|---|---|" + "---|" * args.seeds)
    for b in BUDGETS:
        for m in METHODS:
            cells = [f"{r:.4f} / {o}" for r, o in zip(regret[m, b], overlap[m, b], strict=True)]
            print(f"| {b} | {m} | " + " | ".join(cells) + " |")
    print("\ntrust region length before each batch (active), per seed:")
    for seed, ls in lengths.items():
        print(f"  seed {seed}: " + " ".join(f"{x:g}" for x in ls))
    for m in ("active", "active_global"):
        goal = np.mean(regret[m, 128]) <= r_all
        print(
            f"goal ({m} at 128 at least as good as all {len(y)} in top-1 regret): mean "
            f"{np.mean(regret[m, 128]):.4f} vs {r_all:.4f} -> {'met' if goal else 'not met'}; seeds at or "
            f"below: {sum(r <= r_all for r in regret[m, 128])}/{args.seeds}"
        )
    print(f"wall time {wall:.0f} s")
    if args.test_mixtures and args.test_losses:
        _held_out(final, args, data.domains)
    else:
        print("held-out: not run (no --test_mixtures/--test_losses given)")


def _held_out(final, args, domains) -> None:
    """Held-out Spearman of every final model on a published test pair, printed once: it decides nothing."""
    from scipy.stats import spearmanr

    from regmix_plugin.formats.official import read_regmix_csv

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        test = read_regmix_csv(args.test_mixtures, args.test_losses, ("--test_mixtures", "--test_losses"))
    unjoined = [str(w.message) for w in caught if str(w.message).startswith("joined")]
    if unjoined:
        raise SystemExit(f"--test_mixtures and --test_losses have different index columns: {unjoined[0]}")
    if test.domains != domains:
        raise SystemExit(f"the test pair's domains {test.domains} differ from the pool's {domains}")
    yt = test.target_values(test.resolve_target(args.target))
    rho = {key: spearmanr(model.predict(test.weights), yt).statistic for key, model in final.items()}
    print(f"\nheld-out (decides nothing): Spearman of predicted vs true {args.target} on {len(yt)} published test runs")
    print(f"{test.source}; {PAIRING}\n")
    print("| runs | " + " | ".join(f"{m} (mean)" for m in METHODS) + " | " + " | ".join(f"{m} per seed" for m in
                                                                                   METHODS) + " |")  # fmt: skip
    print("|---|" + "---|" * 2 * len(METHODS))
    for b in BUDGETS:
        per = {m: [rho[m, b, s] for s in range(args.seeds)] for m in METHODS}
        cells = [f"{np.mean(per[m]):.3f}" for m in per] + [" ".join(f"{r:.3f}" for r in per[m]) for m in per]
        print(f"| {b} | " + " | ".join(cells) + " |")
    (n_all,) = [b for m, b, _ in final if m == "all"]
    print(f"| {n_all} (all) | {rho['all', n_all, 0]:.3f} (one model) |" + " |" * (2 * len(METHODS) - 1))


if __name__ == "__main__":
    main()
