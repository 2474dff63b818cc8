"""``regmix sample``: draw the proxy mixtures of a sweep, the RegMix way, into ``mixtures.csv``.

    regmix sample --data_path data/pile --n 512 --target_tokens 25_000_000_000 --out mixtures.csv

``mixtures.csv`` has a ``run_id`` column, then one ``weight/<domain>`` column per domain with train data in
the manifest; every row sums to exactly 1 in decimal (the weights are integers of ``10**-decimals``). The
same file feeds ``regmix sweep`` (and :func:`read_mixtures` validates it for every stage).

The sampler follows the paper's official one (sail-sg/regmix ``mixture_config/synthesize_mixture.py``):

1. the base measure is the train-token distribution of the manifest, tempered: ``p ** temperature``,
   renormalised (``temperature`` is honoured as given; the official code reads a global instead);
2. each draw picks a concentration strength uniformly among ``num_strengths`` values log-spaced between
   ``min_strength`` and ``max_strength`` and samples ``Dirichlet(strength * p_tempered)``;
3. weights below ``minimum`` become 0, the row is renormalised and rounded to ``decimals`` places by largest
   remainder, so it sums to exactly 1 (the official rounding to multiples of ``minimum`` does not);
4. the row is rejected if, at ``target_tokens`` (the size of the run the mixture is meant for), any domain
   would be repeated more than ``max_epochs`` times: ``w_d * target_tokens > max_epochs * train_tokens_d``.
   The bound uses the real token counts and is checked on the final, rounded row; the official code checks
   it before zeroing and renormalising (which raise the other weights) and assumes ``target_tokens`` equals
   the corpus size;
5. exact duplicates (after rounding) are dropped; draws stop once ``n`` distinct rows are accepted.

Optional baseline rows (``natural``, ``uniform``, user-named mixtures) come first; they are rounded the same
way and only warned about if they break the epoch bound, since the user asked for them.
"""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import numpy as np

from regmix_plugin.domains import validate_weights
from regmix_plugin.manifest import read_manifest
from regmix_plugin.results import ID_COLUMN, WEIGHT_PREFIX, write_results
from regmix_plugin.results import read_mixtures as read_results_mixtures


def round_to_one(weights: np.ndarray, decimals: int) -> np.ndarray:
    """Integer units of ``10**-decimals`` that sum to exactly ``10**decimals`` (largest-remainder rounding)."""
    unit = 10**decimals
    scaled = np.asarray(weights, dtype=np.float64) / float(np.sum(weights)) * unit
    out = np.floor(scaled).astype(np.int64)
    short = unit - int(out.sum())
    if short > 0:
        # ties broken by index, so the result is a pure function of the input
        order = np.lexsort((np.arange(len(scaled)), -(scaled - out)))
        out[order[:short]] += 1
    return out


def epoch_bounds(train_tokens: dict[str, int], target_tokens: float, max_epochs: float) -> dict[str, float]:
    """Largest weight per domain such that ``target_tokens`` repeats it at most ``max_epochs`` times."""
    return {d: min(1.0, max_epochs * t / target_tokens) for d, t in train_tokens.items()}


def sample_mixtures(
    train_tokens: dict[str, int],
    n: int,
    target_tokens: float | None = None,
    temperature: float = 0.5,
    min_strength: float = 0.1,
    max_strength: float = 5.0,
    num_strengths: int = 15,
    max_epochs: float = 15,
    minimum: float = 2e-4,
    decimals: int = 4,
    seed: int = 42,
    max_draws: int | None = None,
) -> list[dict[str, float]]:
    """``n`` distinct mixtures ``{domain: weight}`` over the domains of ``train_tokens`` (see module docstring)."""
    domains = sorted(d for d, t in train_tokens.items() if t > 0)
    tokens = np.array([train_tokens[d] for d in domains], dtype=np.float64)
    target = float(target_tokens or tokens.sum())
    prior = (tokens / tokens.sum()) ** temperature
    prior /= prior.sum()
    bound = np.array([epoch_bounds(dict(zip(domains, tokens)), target, max_epochs)[d] for d in domains])
    strengths = np.logspace(math.log10(min_strength), math.log10(max_strength), num_strengths)
    rng = np.random.default_rng(seed)
    unit = 10**decimals
    min_units = math.ceil(minimum * unit - 1e-9)
    seen: set[tuple[int, ...]] = set()
    rows: list[dict[str, float]] = []
    max_draws = max_draws or 1000 * n
    for _ in range(max_draws):
        if len(rows) == n:
            break
        x = rng.dirichlet(prior * strengths[rng.integers(num_strengths)])
        if not np.all(np.isfinite(x)) or x.sum() <= 0:
            continue
        x = np.where(x < minimum, 0.0, x)
        if x.sum() <= 0:
            continue
        units = round_to_one(x, decimals)
        if np.any((units > 0) & (units < min_units)) or np.any(units > bound * unit + 1e-9):
            continue
        key = tuple(int(u) for u in units)
        if key in seen:
            continue
        seen.add(key)
        rows.append({d: int(u) / unit for d, u in zip(domains, units)})
    if len(rows) < n:
        raise ValueError(
            f"only {len(rows)} of --n {n} distinct mixtures passed the bounds in {max_draws} draws; raise "
            "--max_epochs, lower --target_tokens, lower --minimum, raise --decimals, or ask for fewer with --n"
        )
    return rows


def write_mixtures(path: str | Path, mixtures: dict[str, dict[str, float]], domains: list[str]) -> None:
    """Atomically write ``{run_id: {domain: weight}}`` with the results-table writer (``run_id,weight/<d>,...``)."""
    write_results(path, [{ID_COLUMN: r, **{WEIGHT_PREFIX + d: w.get(d, 0.0) for d in domains}} for r, w in mixtures.items()])


def _weight_domains(path: Path) -> list[str]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
    else:
        with open(path, newline="") as f:
            names = next(csv.reader(f), [])
    return [c[len(WEIGHT_PREFIX):] for c in names if c.startswith(WEIGHT_PREFIX)]


def read_mixtures(path: str | Path, domains: list[str], flag: str = "--mixtures") -> dict[str, dict[str, float]]:
    """Read a mixtures table (``regmix sample``'s output) whose ``weight/`` columns must be exactly ``domains``.

    Parsing and per-row weight checks are :func:`regmix_plugin.results.read_mixtures`'; this adds the check
    that no domain is missing or extra (a sweep must not silently train on a different domain set). All
    problems go into one ``ValueError``. Returns ``{run_id: {domain: weight}}`` in file order.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{flag} {str(path)!r} does not exist; write one with `regmix sample --out {path}`")
    problems = []
    columns = _weight_domains(path)
    missing, extra = sorted(set(domains) - set(columns)), sorted(set(columns) - set(domains))
    if missing:
        problems.append(f"missing column(s) for domain(s) {', '.join(missing)}: add weight/<domain> columns (0 is fine)")
    if extra:
        problems.append(f"column(s) for domain(s) {', '.join(extra)} that the prepared corpus does not have: drop "
                        "them or prepare those domains")
    mixes = None
    try:
        mixes = read_results_mixtures(path, flag=flag)
    except ValueError as e:
        problems.append(str(e))
    if problems:
        raise ValueError(f"{flag} {str(path)!r} does not fit --data_path (domains: {', '.join(domains)}):\n  "
                         + "\n  ".join(problems))
    bad_ids = [i for i in mixes.ids if "/" in i or i.startswith(".")]
    if bad_ids:
        raise ValueError(f"{flag} {str(path)!r}: run id(s) {bad_ids[:10]} cannot be file names; rename them")
    return {i: {d: float(w) for d, w in zip(mixes.domains, row)} for i, row in zip(mixes.ids, mixes.weights)}


def sample(
    data_path: Path = Path("data/"),
    out: Path = Path("mixtures.csv"),
    n: int = 512,
    target_tokens: int | None = None,
    temperature: float = 0.5,
    min_strength: float = 0.1,
    max_strength: float = 5.0,
    num_strengths: int = 15,
    max_epochs: float = 15,
    minimum: float = 2e-4,
    decimals: int = 4,
    seed: int = 42,
    natural: bool = False,
    uniform: bool = False,
    baselines: dict[str, dict[str, float]] | None = None,
) -> None:
    """Sample proxy mixtures from a prepared corpus's token distribution and write them as a CSV.

    Arguments:
        data_path: Prepared corpus (the ``--out_dir`` of ``regmix prepare``); its manifest gives the domains and
            their train tokens.
        out: The mixtures CSV to write: ``run_id`` then one ``weight/<domain>`` column per domain.
        n: Number of sampled mixtures (baseline rows come on top).
        target_tokens: Token budget of the run the mixture is for, used by the ``max_epochs`` bound; default:
            the corpus's train tokens (the official sampler's assumption).
        temperature: Exponent applied to the token distribution before it becomes the Dirichlet base measure;
            below 1 flattens it.
        min_strength: Smallest Dirichlet concentration strength (small: peaked mixtures).
        max_strength: Largest Dirichlet concentration strength (large: close to the base measure).
        num_strengths: Number of log-spaced strengths between the two, one drawn per sample.
        max_epochs: Reject mixtures that would repeat any domain more than this many times at ``target_tokens``.
        minimum: Weights below this become 0 before the row is renormalised.
        decimals: Decimal places of the written weights; rows sum to exactly 1 at this precision.
        seed: Seed of the sampler; the same seed and manifest give the same file.
        natural: Add a row ``natural``: the untempered token distribution.
        uniform: Add a row ``uniform``: equal weight on every domain.
        baselines: Extra named rows ``{name: {domain: weight}}`` (domains left out get 0).
    """
    manifest = read_manifest(data_path)
    tokens = manifest.train_tokens()
    domains = manifest.train_domains()
    problems = []
    if n < 0:
        problems.append(f"--n must be >= 0, got {n}")
    if not 0 < min_strength <= max_strength:
        problems.append(f"need 0 < --min_strength <= --max_strength, got {min_strength} and {max_strength}")
    if temperature <= 0:
        problems.append(f"--temperature must be > 0, got {temperature}")
    if not 0 <= minimum < 1 / max(1, len(domains)):
        problems.append(f"--minimum must be in [0, 1/{len(domains)}), got {minimum}")
    if max_epochs <= 0 or (target_tokens is not None and target_tokens <= 0):
        problems.append("--max_epochs and --target_tokens must be > 0")
    if not 1 <= decimals <= 9 or minimum * 10**decimals % 1 > 1e-9:
        problems.append(f"--decimals {decimals} must be 1..9 and fine enough to write --minimum {minimum} exactly")
    if num_strengths < 1:
        problems.append(f"--num_strengths must be >= 1, got {num_strengths}")
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
    if problems:
        raise ValueError("regmix sample: " + "; ".join(problems))

    bounds = epoch_bounds({d: tokens[d] for d in domains}, float(target_tokens or sum(tokens.values())), max_epochs)
    mixtures: dict[str, dict[str, float]] = {}
    for name, w in named.items():
        units = round_to_one(np.array([w.get(d, 0.0) for d in domains]), decimals)
        mixtures[name] = {d: int(u) / 10**decimals for d, u in zip(domains, units)}
        over = [d for d in domains if mixtures[name][d] > bounds[d] + 1e-12]
        if over:
            warnings.warn(f"baseline {name!r} repeats {', '.join(over)} more than --max_epochs {max_epochs:g} times")
    rows = sample_mixtures(
        {d: tokens[d] for d in domains}, n, target_tokens=target_tokens, temperature=temperature,
        min_strength=min_strength, max_strength=max_strength, num_strengths=num_strengths, max_epochs=max_epochs,
        minimum=minimum, decimals=decimals, seed=seed,
    )
    width = max(4, len(str(n)))
    for i, row in enumerate(rows, start=1):
        mixtures[f"mix-{i:0{width}d}"] = row
    write_mixtures(out, mixtures, domains)
    print(f"wrote {len(mixtures)} mixtures over {len(domains)} domains to {out}")
