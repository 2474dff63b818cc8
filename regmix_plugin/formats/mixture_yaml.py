"""``mixture.yaml``: one chosen mixture with how it was chosen, read by ``regmix recipe``.

    # comment header (what wrote it, from what)
    weights: {arxiv: 0.03, pile_cc: 0.61, ...}     # required: every domain, summing to 1
    prediction: {...}                              # what the writer predicted (optional)
    constraints: {target_tokens: ..., ...}         # the bounds it was chosen under (optional)
    provenance: {...}                              # model, date, version (optional)

``regmix optimize`` writes it; any other producer of a mixture (a law optimiser, an entropy heuristic, a
hand-written file) may write the same keys, so ``regmix recipe`` takes all of them unchanged.
"""

from __future__ import annotations

from pathlib import Path

from regmix_plugin.atomic import write_text
from regmix_plugin.formats.document import read_document
from regmix_plugin.weights import validate_weights


def write_mixture(path: Path, record: dict, header: str = "") -> None:
    """Atomically write ``record`` as YAML below ``header`` (each of its lines becomes a ``#`` comment)."""
    import yaml

    if not isinstance(record.get("weights"), dict):
        raise ValueError("a mixture record needs a 'weights' mapping")
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
