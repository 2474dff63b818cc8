"""``mixture.yaml``: one chosen mixture with how it was chosen, read by ``regmix recipe``.

    # comment header (what wrote it, from what)
    weights: {arxiv: 0.03, pile_cc: 0.61, ...}     # required: every domain, summing to 1
    prediction: {...}                              # what the writer predicted (optional)
    constraints: {target_tokens: ..., ...}         # the bounds it was chosen under (optional)
    provenance: {...}                              # model, date, version (optional)
    tokenizer: sha256:...                          # the corpus's tokenizer hash (optional)
    fingerprints: {arxiv: 3f2a..., ...}            # each domain's content fingerprint (optional)

``regmix optimize`` writes it; any other producer of a mixture (a law optimiser, an entropy heuristic, a
hand-written file) may write the same keys, so ``regmix recipe`` takes all of them unchanged.

``tokenizer`` and ``fingerprints`` (:meth:`regmix_plugin.formats.manifest.Manifest.fingerprints`) say which version
of the corpus the weights are for; ``regmix sample --reuse`` keeps the ratios of the domains whose fingerprint
still matches. Writers that know the corpus add them (``write_mixture(..., manifest=...)``); a file written before
them is matched by domain name, with a warning (:func:`corpus_of`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

from regmix_plugin.atomic import write_text
from regmix_plugin.formats.document import read_document
from regmix_plugin.formats.reuse import DomainComparison, ReuseStructure, compare_domains
from regmix_plugin.weights import validate_weights


def write_mixture(path: Path, record: dict, header: str = "", manifest=None) -> None:
    """Atomically write ``record`` as YAML below ``header`` (each of its lines becomes a ``#`` comment).

    With ``manifest`` (the corpus the weights are for, a :class:`~regmix_plugin.formats.manifest.Manifest`) the
    record gets its ``tokenizer`` hash and the ``fingerprints`` of the weights' domains."""
    import yaml

    if not isinstance(record.get("weights"), dict):
        raise ValueError("a mixture record needs a 'weights' mapping")
    if manifest is not None:
        prints = manifest.fingerprints()
        record = {
            **record,
            "tokenizer": manifest.tokenizer_hash,
            "fingerprints": {d: prints.get(d) for d in sorted(record["weights"])},
        }
    comment = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    write_text(path, comment + yaml.safe_dump(record, sort_keys=False, default_flow_style=False))


def read_mixture(path: Path, flag: str = "--mixture") -> dict:
    """Read a mixture YAML; its weights are re-validated (and renormalised within rounding)."""
    path = Path(path)
    if path.suffix.lower() in _TABLES:
        raise ValueError(_table_given(path, flag))
    record = read_document(
        path,
        f"{flag} {str(path)!r} does not exist; write it with `regmix optimize --out {path}`",
        f"write it again with `regmix optimize --out {path}`",
    )
    if not isinstance(record, dict) or not isinstance(record.get("weights"), dict):
        raise ValueError(f"{flag} {str(path)!r} has no 'weights:' mapping; is it the output of `regmix optimize`?")
    record["weights"] = validate_weights(record["weights"], record["weights"], key=f"{flag} {path} weights")
    return record


def corpus_of(record: dict, path: Path, flag: str) -> tuple[dict[str, str | None], str | None]:
    """``({domain: fingerprint or None}, tokenizer hash or None)`` of a read mixture record, for every domain of its
    weights. A record without fingerprints (written before they were recorded, or by hand) warns: its domains can
    only be matched by name."""
    prints = record.get("fingerprints")
    if not isinstance(prints, dict):
        warnings.warn(
            f"{flag} {str(path)!r} records no domain fingerprints (written before they were recorded, or by hand): "
            "its domains are matched by name only, so a domain whose content changed under the same name counts as "
            "unchanged. Write it again with `regmix optimize --data_path ...` to record them",
            stacklevel=2,
        )
        prints = {}
    fingerprints = {d: (str(prints[d]) if prints.get(d) else None) for d in record["weights"]}
    tokenizer = record.get("tokenizer")
    return fingerprints, str(tokenizer) if tokenizer else None


def reuse_from_previous(
    previous: Path, manifest, domains: Sequence[str], free: Sequence[str] = (), flag: str = "--reuse"
) -> tuple[ReuseStructure, DomainComparison]:
    """The reuse structure for ``domains`` (the new corpus's training domains, sorted) from a previous
    ``mixture.yaml``, and how its domains compare with the new ``manifest``'s.

    The block is the unchanged domains (name and fingerprint match) less ``free`` (``--reuse_free``), with their
    previous weights as ratios. Refused, with every problem in one message: another tokenizer, an unknown
    ``--reuse_free`` domain, an empty block (nothing unchanged, or the block had weight 0) and no free domain
    (nothing changed: the previous mixture applies as it is).
    """
    record = read_mixture(previous, flag)
    prints, tokenizer = corpus_of(record, previous, flag)
    current = manifest.fingerprints()
    comparison = compare_domains(prints, current, domains)
    problems = []
    if tokenizer is not None and tokenizer != manifest.tokenizer_hash:
        problems.append(
            f"{flag} {str(previous)!r} is for a corpus tokenized with {tokenizer}, this one with "
            f"{manifest.tokenizer_hash}: reuse needs the same tokenizer (every domain changed); run a full "
            "`regmix sample` without --reuse"
        )
    unknown = sorted(set(free) - set(comparison.unchanged))
    if unknown:
        problems.append(
            f"--reuse_free: {', '.join(unknown)} are not unchanged domains (unchanged: "
            f"{', '.join(comparison.unchanged) or 'none'}); only an unchanged domain can be freed"
        )
    block = [d for d in comparison.unchanged if d not in set(free)]
    if not problems and not block:
        problems.append(
            f"{flag}: no unchanged domain is left to reuse ({comparison.summary()}); "
            "run `regmix sample` without --reuse"
        )
    elif not problems and sum(float(record["weights"][d]) for d in block) <= 0:
        problems.append(
            f"{flag}: the unchanged domains {', '.join(block)} had weight 0 in {str(previous)!r}, so there is no ratio "
            "to keep; run `regmix sample` without --reuse"
        )
    if not problems and len(block) == len(domains):
        problems.append(
            f"{flag}: every domain is unchanged, so {str(previous)!r} applies as it is (nothing to sample); name the "
            "domains to re-tune with --reuse_free '[domain, ...]'"
        )
    if problems:
        raise ValueError("; ".join(problems))
    ratios = {d: float(record["weights"][d]) for d in block}
    return ReuseStructure(tuple(domains), ratios, str(previous)), comparison


_TABLES = (".csv", ".tsv", ".parquet")


def _table_given(path: Path, flag: str) -> str:
    """Why a mixtures/results table is not a mixture YAML, and how to make one from one of its rows."""
    example, which = "{domain: weight, ...}", ""
    try:
        from regmix_plugin.formats.mixture_table import read_mixtures

        table = read_mixtures(path, flag)
        run, weights = next(iter(table.as_dict().items()))
        example = "{" + ", ".join(f"{d}: {w:g}" for d, w in weights.items()) + "}"
        which = f" (here for row {run!r})"
    except (OSError, ValueError, StopIteration):
        pass  # not readable as a table either: the generic example
    return (
        f"{flag} {str(path)!r} is a table, not a mixture YAML: {flag} takes the mixture YAML written by "
        "`regmix optimize`, `regmix entropy` or `regmix schedule` (its schedule.yaml). No command turns a row of a "
        f"mixtures or results table into one; to train one row's mixture, write a YAML file holding "
        f"`weights: {example}`{which} and pass that"
    )
