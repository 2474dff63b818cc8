"""``schedule.yaml``: a RegMix-D mixture schedule, written by ``regmix schedule``, read by ``regmix recipe``.

    stages:                        # in training order; the last one runs to the end
    - until_fraction: 0.3333333333 # this stage ends at this fraction of the run's tokens
      weights: {code: 0.2, prose: 0.8}
    - weights: {code: 0.6, prose: 0.4}
    prediction: {...}              # what the trajectory model predicts for it (per stage and at the end)
    search: {...}                  # candidates, top-k, smoothing, seed
    constraints: {...}
    provenance: {...}

``stages`` has exactly MixtureData's ``schedule:`` shape (``until_fraction`` stages), so
:meth:`Schedule.mixture_data_schedule` is what goes into a recipe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regmix_plugin.weights import validate_weights


@dataclass
class ScheduleStage:
    """The weights in force until ``until_fraction`` of the run (``None``: to the end)."""

    weights: dict[str, float]
    until_fraction: float | None = None


@dataclass
class Schedule:
    stages: list[ScheduleStage]
    prediction: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Any] = field(default_factory=dict)
    constraints: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def mixture_data_schedule(self, keep_zero: set[str] | frozenset = frozenset()) -> list[dict]:
        """The ``data.init_args.schedule`` list of a MixtureData recipe (10 significant digits per weight).

        A zero weight is kept only for domains in ``keep_zero``, so a recipe names no domain it never trains on.
        """
        out = []
        for st in self.stages:
            entry: dict[str, Any] = {}
            if st.until_fraction is not None:
                entry["until_fraction"] = float(f"{st.until_fraction:.10g}")
            entry["weights"] = {d: float(f"{w:.10g}") for d, w in st.weights.items() if w > 0 or d in keep_zero}
            out.append(entry)
        return out

    def as_dict(self) -> dict:
        stages = []
        for st in self.stages:
            entry: dict[str, Any] = {}
            if st.until_fraction is not None:
                entry["until_fraction"] = float(f"{st.until_fraction:.10g}")
            entry["weights"] = {d: float(f"{w:.10g}") for d, w in st.weights.items()}
            stages.append(entry)
        return {
            "stages": stages,
            "prediction": self.prediction,
            "search": self.search,
            "constraints": self.constraints,
            "provenance": self.provenance,
        }


def validate_stages(stages: Any, where: str) -> list[ScheduleStage]:
    """Check a list of ``{until_fraction?, weights}``; collect every problem and raise once."""
    if not isinstance(stages, list) or not stages:
        raise ValueError(f"{where}: 'stages' must be a non-empty list of {{until_fraction, weights}} entries")
    problems, out, last = [], [], 0.0
    for i, st in enumerate(stages):
        if not isinstance(st, dict) or "weights" not in st or set(st) - {"weights", "until_fraction"}:
            problems.append(f"stages[{i}] must have 'weights' and, except for the last stage, 'until_fraction'")
            continue
        frac = st.get("until_fraction")
        final = i == len(stages) - 1
        if final and frac is not None and float(frac) != 1.0:
            problems.append(f"stages[{i}] is the last stage and runs to the end: drop its until_fraction ({frac})")
        elif not final:
            try:
                frac = float(frac)
            except (TypeError, ValueError):
                problems.append(f"stages[{i}].until_fraction is {frac!r}; every stage but the last needs one in (0, 1)")
                continue
            if not (math.isfinite(frac) and last < frac < 1):
                problems.append(
                    f"stages[{i}].until_fraction {frac} must be in ({last:g}, 1) and increase stage by stage"
                )
            last = frac if math.isfinite(frac) else last
        try:
            weights = validate_weights(
                st["weights"],
                st["weights"] if isinstance(st["weights"], dict) else (),
                key=f"{where} stages[{i}].weights",
            )
        except ValueError as e:
            problems.append(str(e))
            continue
        out.append(ScheduleStage(weights, None if final else float(frac)))
    if problems:
        raise ValueError(f"{where}: " + "; ".join(problems))
    return out


def write_schedule(path: Path, schedule: Schedule) -> None:
    """Write ``schedule.yaml`` atomically, with a comment header saying how to use it."""
    import yaml

    from regmix_plugin.atomic import write_text

    prov, pred = schedule.provenance, schedule.prediction
    header = [
        (
            f"# Mixture schedule by `regmix schedule` ({prov.get('created', '?')}): {len(schedule.stages)} stage(s), "
            f"each the mean of the top {schedule.search.get('top_k', '?')} simulated mixtures,"
        )
    ]
    if prov.get("model"):
        header.append(
            f"# ranked by the trajectory model {prov['model']} ({prov.get('features')} features, "
            f"{prov.get('regressor')}; held-out rollout RMSE {_or_nan(prov.get('cv_rollout_rmse')):.4f})."
        )
    if "at_schedule" in pred:
        best = pred.get("at_best_static", float("nan"))
        header.append(
            f"# Predicted final target {pred['at_schedule']:.4f}; best single mixture, same model: {best:.4f}."
        )
    header.append("# Make a training recipe: regmix recipe --mixture THIS.yaml --template RECIPE.yaml --out NEW.yaml")
    write_text(path, "\n".join(header) + "\n" + yaml.safe_dump(schedule.as_dict(), sort_keys=False))


def _or_nan(x: Any) -> float:
    return float("nan") if x is None else float(x)


def is_schedule_record(record: Any) -> bool:
    return isinstance(record, dict) and "stages" in record and "weights" not in record


def read_schedule(path: Path, flag: str = "--schedule") -> Schedule:
    """Read and validate a ``schedule.yaml``."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{flag} {str(path)!r} does not exist; write it with `regmix schedule --out {path}`")
    try:
        record = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{flag} {path} is not valid YAML: {e}") from None
    if not is_schedule_record(record):
        raise ValueError(f"{flag} {path} has no 'stages:' list; is it the output of `regmix schedule`?")
    stages = validate_stages(record["stages"], f"{flag} {path}")
    return Schedule(stages, **{k: record.get(k) or {} for k in ("prediction", "search", "constraints", "provenance")})
