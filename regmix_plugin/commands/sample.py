"""``regmix sample``: draw the proxy mixtures of a sweep, the RegMix way, into ``mixtures.csv``.

    regmix sample --data_path data/pile --n 512 --constraints.target_tokens 25e9 --out mixtures.csv

``mixtures.csv`` has a ``run_id`` column, then one ``weight/<domain>`` column per domain with train data in
the manifest; every row sums to exactly 1 in decimal (the weights are integers of ``10**-decimals``). The
same file feeds ``regmix sweep`` (and :func:`read_mixtures` validates it for every stage).

The sampler follows the paper's official one (sail-sg/regmix ``mixture_config/synthesize_mixture.py``):

1. the base measure is the train-token distribution of the manifest, tempered: ``p ** temperature``,
   renormalised (``temperature`` is honoured as given; the official code reads a global instead); with
   ``--prior_source entropy`` it is the entropy mixture of ``regmix entropy`` instead (BiMix's training-free mixture);
2. each draw picks a concentration strength uniformly among ``num_strengths`` values log-spaced between
   ``min_strength`` and ``max_strength`` and samples ``Dirichlet(strength * p_tempered)``;
3. weights below ``drop_below`` become 0, the row is renormalised and rounded to ``decimals`` places by largest
   remainder, so it sums to exactly 1 (the official rounding to multiples of ``minimum`` does not);
4. the row is rejected if, at ``target_tokens`` (the size of the run the mixture is meant for), any domain
   would be repeated more than ``max_epochs`` times: ``w_d * target_tokens > max_epochs * train_tokens_d``
   (with ``--constraints.block_size``: ``w_d * (target_tokens // block_size) > max_epochs * blocks_d``,
   MixtureData's unit).
   The bound uses the real token counts and is checked on the final, rounded row; the official code checks
   it before zeroing and renormalising (which raise the other weights) and assumes ``target_tokens`` equals
   the corpus size;
5. exact duplicates (after rounding) are dropped; draws stop once ``n`` distinct rows are accepted.

Optional baseline rows (``natural``, ``uniform``, user-named mixtures) come first; they are rounded the same
way and only warned about if they break the epoch bound, since the user asked for them.

**Reuse** (``--reuse PREVIOUS.yaml``, when the corpus changed since ``PREVIOUS`` was chosen): the domains whose
name and content fingerprint are unchanged keep their previous ratios to each other as one block
(:mod:`regmix_plugin.formats.reuse`); ``--reuse_free`` takes unchanged domains out of it. Steps 2-5 then run over
the reduced coordinates, the block's total and the free domains, around the prior reduced the same way (the
block's prior is its total prior mass); each reduced row is rounded by largest remainder and expanded, the
block's units split among its domains by largest remainder of the ratios, so every block cell is within one unit
of ``10**-decimals`` of ``total * ratio`` and the cells are a pure function of the rounded total. The epoch bound
is checked on every underlying domain of the rounded row. Baseline rows are projected the same way (their block
total kept, the block's ratios imposed). The file records the block in its ``# reuse:`` line, so ``sweep``
refuses an edited row that breaks the ratios and ``fit`` fits in the reduced coordinates::

    regmix sample --data_path data/v2 --reuse v1/mixture.yaml --n 128 --out mixtures_v2.csv
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path
from typing import Literal

from regmix_plugin.draws import sample_schedules
from regmix_plugin.formats.manifest import read_manifest
from regmix_plugin.formats.mixture_table import write_mixtures
from regmix_plugin.formats.mixture_yaml import reuse_from_previous
from regmix_plugin.weights import (
    FLAGS,
    ConstraintArgs,
    SamplerArgs,
    epoch_bounds,
    largest_remainder,
    too_small,
    too_small_message,
    train_sizes,
    validate_weights,
)


def sample(
    data_path: Path = Path("data/"),
    out: Path = Path("mixtures.csv"),
    n: int = 512,
    constraints: ConstraintArgs = ConstraintArgs(),
    temperature: float = 0.5,
    sampler: SamplerArgs = SamplerArgs(),
    drop_below: float = 2e-4,
    decimals: int = 4,
    seed: int = 42,
    natural: bool = False,
    uniform: bool = False,
    baselines: dict[str, dict[str, float]] | None = None,
    prior_source: Literal["tokens", "entropy"] = "tokens",
    stages: int = 1,
    reuse: Path | None = None,
    reuse_free: list[str] | None = None,
) -> None:
    """Sample proxy mixtures from a prepared corpus's token distribution and write them as a CSV.

    Arguments:
        data_path: Prepared corpus (the ``--out_dir`` of ``regmix prepare``); its manifest gives the domains and
            their train tokens.
        out: The mixtures CSV to write: ``run_id`` then one ``weight/<domain>`` column per domain.
        n: Number of sampled mixtures (baseline rows come on top); 0 writes the baseline rows only.
        constraints: Mixtures that break these are rejected: the epoch bound at ``--constraints.target_tokens``
            (default: the corpus's train tokens) and excluded domains (every ``--constraints.*`` flag is listed
            below; ``min_weight``/``max_weight`` are for the planners and refused here).
        temperature: Exponent applied to the token distribution before it becomes the Dirichlet base measure;
            below 1 flattens it.
        sampler: Dirichlet concentration strengths around the base measure (shared with ``regmix optimize``).
        drop_below: Weights below this become 0 before the row is renormalised (no weight written is smaller).
        decimals: Decimal places of the written weights; rows sum to exactly 1 at this precision.
        seed: Seed of the sampler; the same seed and manifest give the same file.
        natural: Add a row ``natural``: the untempered token distribution.
        uniform: Add a row ``uniform``: equal weight on every domain.
        baselines: Extra named rows ``{name: {domain: weight}}`` (domains left out get 0).
        prior_source: Centre of the Dirichlet draws: ``tokens`` (the tempered token distribution, the paper's) or
            ``entropy``: the training-free mixture of `regmix entropy` (softmax of each domain's conditional
            token entropy on a seeded 4M-token sample; ``--temperature`` does not apply to it).
        stages: Stages per proxy, for RegMix-D (``regmix fit_trajectory``): each proxy gets an independent
            draw per equal stage, written as ``weight/<domain>@<stage>`` columns; the ``max_epochs`` bound is
            counted over the whole run. Baseline rows keep their mixture in every stage. 1: static mixtures.
        reuse: A ``mixture.yaml`` chosen for an earlier version of this corpus (``regmix optimize`` or ``entropy``):
            its domains whose content is unchanged keep their ratios as one block; only the block's total and the
            changed or new domains vary (see the module docstring). Static mixtures only.
        reuse_free: Unchanged domains to re-tune anyway (taken out of the block), e.g. ``'[web]'``.
    """
    c = ConstraintArgs.of(constraints)
    target_tokens, max_epochs, block_size, exclude = c.target_tokens, c.max_epochs, c.block_size, c.exclude
    minimum = drop_below
    manifest = read_manifest(data_path)
    tokens = manifest.train_tokens()
    domains = manifest.train_domains()
    problems = []
    if n < 0:
        problems.append(f"--n must be >= 0, got {n}")
    if stages < 1:
        problems.append(f"--stages must be >= 1, got {stages}")
    sampler = SamplerArgs(**sampler) if isinstance(sampler, dict) else sampler
    problems += sampler.problems()
    if temperature <= 0:
        problems.append(f"--temperature must be > 0, got {temperature}")
    if not 0 <= minimum < 1 / max(1, len(domains)):
        problems.append(f"--drop_below must be in [0, 1/{len(domains)}), got {minimum}")
    if max_epochs <= 0 or (target_tokens is not None and target_tokens <= 0):
        problems.append(f"{FLAGS}max_epochs and {FLAGS}target_tokens must be > 0")
    if not 1 <= decimals <= 9 or minimum * 10**decimals % 1 > 1e-9:
        problems.append(f"--decimals {decimals} must be 1..9 and fine enough to write --drop_below {minimum} exactly")
    if c.min_weight or c.max_weight:
        problems.append(
            f"{FLAGS}min_weight and {FLAGS}max_weight bound a planned mixture (regmix optimize, "
            "schedule, entropy); regmix sample does not take them: leave them out"
        )
    named: dict[str, dict[str, float]] = {}
    if natural:
        named["natural"] = manifest.natural_weights(1.0)
    if uniform:
        named["uniform"] = {d: 1.0 / len(domains) for d in domains}
    for name, w in (baselines or {}).items():
        try:
            named[str(name)] = validate_weights(w, domains, key=f"--baselines.{name}")
        except ValueError as e:
            problems.append(str(e))
    if n == 0 and not named:
        problems.append(
            "--n 0 with no baseline row would write an empty mixtures file: give --n >= 1 (the number "
            "of proxy mixtures to draw; RegMix's sweeps use 512), or add rows with --natural true, "
            "--uniform true or --baselines"
        )
    if prior_source not in ("tokens", "entropy"):
        problems.append(f"--prior_source must be tokens or entropy, got {prior_source!r}")
    unknown = sorted(set(exclude or ()) - set(domains))
    if unknown:
        problems.append(f"{FLAGS}exclude: unknown domain(s) {', '.join(unknown)}; domains: {', '.join(domains)}")
    if len(set(exclude or ()) & set(domains)) == len(domains):
        problems.append(f"{FLAGS}exclude leaves no domain to sample")
    sizes = train_sizes(domains, block_size, data_path, tokens)
    small = [d for d in too_small({d: sizes[d] for d in domains}, block_size) if d not in (exclude or ())]
    if small:
        problems.append(too_small_message(small, block_size, f"{FLAGS}exclude [{','.join(small)}]"))
    structure = comparison = None
    if reuse is not None:
        try:
            structure, comparison = reuse_from_previous(reuse, manifest, domains, reuse_free or [])
            structure = replace(structure, decimals=decimals)
        except (ValueError, FileNotFoundError) as e:
            problems.append(str(e))
        if stages > 1:
            problems.append("--reuse samples static mixtures: leave out --stages")
        frozen = sorted(set(exclude or ()) & set(structure.block if structure else ()))
        if frozen:
            problems.append(
                f"{FLAGS}exclude {', '.join(frozen)}: reused (unchanged) domains keep their ratios; free them with "
                f"--reuse_free to exclude them"
            )
    elif reuse_free:
        problems.append("--reuse_free needs --reuse PREVIOUS.yaml")
    if problems:
        raise ValueError("regmix sample: " + "; ".join(problems))
    if comparison is not None:
        print(f"reuse {reuse}: {comparison.summary()}; the block keeps {', '.join(structure.block)}")
        if comparison.dropped:
            print(f"note: dropped since {reuse}: {', '.join(comparison.dropped)} (its share goes to the others)")
    center = None
    if prior_source == "entropy":
        from regmix_plugin.models.token_entropy import entropy_mixture

        center = entropy_mixture(data_path, seed=seed)["weights"]

    bounds = epoch_bounds(
        {d: sizes[d] for d in domains}, float(target_tokens or sum(tokens.values())), max_epochs, block_size
    )
    mixtures: dict[str, dict[str, float]] = {}
    for name, w in named.items():
        units = largest_remainder([w.get(d, 0.0) for d in domains], 10**decimals)
        if structure is not None:  # projected onto the reuse space: its block total, the block's ratios
            units = structure.round_units(structure.reduce(units / 10**decimals), decimals)
        mixtures[name] = {d: int(u) / 10**decimals for d, u in zip(domains, units, strict=True)}
        over = [d for d in domains if mixtures[name][d] > bounds[d] + 1e-12]
        if over:
            warnings.warn(
                f"baseline {name!r} repeats {', '.join(over)} more than {FLAGS}max_epochs {max_epochs:g} times",
                stacklevel=2,
            )
    rows = sample_schedules(
        {d: tokens[d] for d in domains},
        n,
        stages,
        target_tokens=target_tokens,
        temperature=temperature,
        sampler=sampler,
        max_epochs=max_epochs,
        minimum=minimum,
        decimals=decimals,
        seed=seed,
        center=center,
        block_size=block_size,
        sizes=sizes,
        exclude=exclude,
        reuse=structure,
    )
    runs: dict = {name: [w] * stages if stages > 1 else w for name, w in mixtures.items()}
    width = max(4, len(str(n)))
    for i, row in enumerate(rows, start=1):
        runs[f"mix-{i:0{width}d}"] = row if stages > 1 else row[0]
    write_mixtures(out, runs, domains, stages, reuse=structure)
    what = "mixtures" if stages == 1 else f"{stages}-stage schedules"
    print(f"wrote {len(runs)} {what} over {len(domains)} domains to {out}")
