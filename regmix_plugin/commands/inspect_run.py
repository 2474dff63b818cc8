"""``regmix inspect``: the realized mixture stored in a LitGPT checkpoint, next to the requested one.

    regmix inspect out/pretrain/final
    regmix inspect out/pretrain/step-00001000 --json    # {domain: {weight, samples, tokens, epochs}}

For a scheduled run (``--data.schedule``, with or without ``RegMixDController``) the table is followed by one
row per stage and domain: the weights requested for the stage (the controller's decision where it made one)
and those realised, from every stream's stage log, on every rank; then a ``FAULT`` line for each stream that
trained something other than the decision (which rank and worker, which stage, what it trained, why).
"""

from __future__ import annotations

import json as _json
from pathlib import Path


def planned_samples(stages: list[dict], stream: dict) -> dict[str, float]:
    """Samples per domain that one stream should have taken by now: the exact-blending target.

    A callback's switch restarts blending mid-stage; the part of that stage before the switch is counted at
    the stage's scheduled weights.
    """
    out: dict[str, float] = {}

    def add(weights: dict[str, float], n: int) -> None:
        for d, w in weights.items():
            out[d] = out.get(d, 0.0) + w * max(0, n)

    start, current = 0, stream["stage"]
    for i, st in enumerate(stages[: current + 1]):
        end = stream["position"] if i == current else st["end"]
        if i == current and stream.get("override"):
            switch = end - sum(stream["stage_samples"].values())
            add(st["weights"], switch - start)
            add(stream["override"], end - switch)
        else:
            add(st["weights"], end - start)
        start = end
    return out


def read_data_state(checkpoint_dir: Path) -> dict:
    """The ``train_dataloader`` state saved by MixtureData in ``checkpoint_dir/lit_model.pth`` (no code runs)."""
    import torch

    checkpoint_dir = Path(checkpoint_dir)
    ckpt = checkpoint_dir / "lit_model.pth" if checkpoint_dir.is_dir() else checkpoint_dir
    if not ckpt.is_file():
        raise FileNotFoundError(
            f"CHECKPOINT_DIR {str(checkpoint_dir)!r} has no lit_model.pth; pass a directory "
            "like out/pretrain/final or out/pretrain/step-00001000"
        )
    state = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
    data = state.get("train_dataloader")
    if not isinstance(data, dict) or "streams" not in data:
        raise ValueError(f"{ckpt} holds no MixtureData state: was it trained with data: regmix_plugin.MixtureData?")
    return data


def realized_mixture(checkpoint_dir: Path) -> dict[str, dict]:
    """``{domain: {weight, samples, tokens, epochs, planned}}`` summed over all streams of rank 0's checkpoint."""
    from regmix_plugin.pretrain.stream import summarize

    data = read_data_state(checkpoint_dir)
    totals = summarize(data["streams"], data["tokens_per_sample"])
    planned: dict[str, float] = {}
    for stream in data["streams"].values():
        for d, n in planned_samples(data["stages"], stream).items():
            planned[d] = planned.get(d, 0.0) + n
    all_planned = sum(planned.values()) or 1.0
    domains = sorted(set(planned) | set(totals))
    return {
        d: {
            "weight": planned.get(d, 0.0) / all_planned,
            "samples": totals.get(d, {}).get("samples", 0),
            "tokens": totals.get(d, {}).get("tokens", 0),
            "epochs": totals.get(d, {}).get("epochs", 0),
            "planned": planned.get(d, 0.0),
        }
        for d in domains
    }


def all_streams(data: dict) -> dict[tuple[int, int], dict]:
    """``{(rank, worker): stream state}`` of every stream in the checkpoint (rank 0's only in older ones)."""
    ranks = data.get("ranks") or {0: data["streams"]}
    return {(int(r), int(w)): st for r, streams in ranks.items() for w, st in streams.items()}


def stage_counts(stream: dict) -> list[dict[str, int]]:
    """Samples per domain that one stream took in each stage it entered, from its ``stage_log``."""
    log = stream.get("stage_log") or []
    marks = [entry["samples"] for entry in log] + [stream["samples"]]
    spans = zip(marks, marks[1:], strict=False)
    return [{d: n - before.get(d, 0) for d, n in after.items()} for before, after in spans]


def stage_rows(data: dict) -> list[dict]:
    """Per stage of a scheduled run: the requested weights (the controller's decision where it made one), the
    planned ones, and the realised weights and samples summed over every stream of every rank; plus each
    stream's fault. Empty for an unscheduled run or a checkpoint written before streams logged their stages."""
    streams = all_streams(data)
    stages = data["stages"]
    if len(stages) < 2 or not streams or any(not st.get("stage_log") for st in streams.values()):
        return []
    planned = data.get("planned_stages") or stages
    rows = []
    for k, stage in enumerate(stages):
        samples: dict[str, int] = {}
        faults, starts = [], set()
        for (rank, worker), st in sorted(streams.items()):
            log, counts = st["stage_log"], stage_counts(st)
            i = next((i for i, entry in enumerate(log) if entry["stage"] == k), None)
            if i is None:
                continue  # not reached yet
            starts.add(log[i]["start"])
            for d, n in counts[i].items():
                samples[d] = samples.get(d, 0) + n
            if log[i].get("fault"):
                faults.append({"rank": rank, "worker": worker, "trained": log[i]["weights"], "fault": log[i]["fault"]})
        if not starts:
            break
        total = sum(samples.values()) or 1
        rows.append(
            {
                "stage": k,
                "start": min(starts),
                "requested": dict(stage["weights"]),
                "planned": dict(planned[k]["weights"]),
                "realized": {d: n / total for d, n in samples.items()},
                "samples": samples,
                "faults": faults,
            }
        )
    return rows


def inspect(checkpoint_dir: Path, json: bool = False) -> None:
    """Print the realized mixture of a checkpoint next to the requested weights.

    Counts are per rank-0 data streams (ranks consume symmetric streams, so multiply by the number of ranks
    for the whole run). A final checkpoint includes the one batch LitGPT fetches before it sees the budget
    is spent.

    Arguments:
        checkpoint_dir: A LitGPT checkpoint directory (``out/pretrain/final``, ``.../step-00001000``).
        json: Print ``{domain: {weight, samples, tokens, epochs}}`` as JSON instead of a table.
    """
    rows = realized_mixture(checkpoint_dir)
    stages = stage_rows(read_data_state(checkpoint_dir))
    if json:
        print(
            _json.dumps(
                {d: {k: r[k] for k in ("weight", "samples", "tokens", "epochs")} for d, r in rows.items()}, indent=2
            )
        )
        return
    total = sum(r["samples"] for r in rows.values()) or 1
    print(
        f"{'domain':<24}{'weight':>9}{'realized':>10}{'samples':>10}{'planned':>11}{'diff':>7}{'tokens':>14}{'epochs':>7}"
    )
    for d, r in rows.items():
        print(
            f"{d:<24}{r['weight']:>9.4f}{r['samples'] / total:>10.4f}{r['samples']:>10,}{r['planned']:>11.1f}"
            f"{r['samples'] - r['planned']:>+7.1f}{r['tokens']:>14,}{r['epochs']:>7}"
        )
    if stages:
        _print_stages(stages)


def _print_stages(stages: list[dict]) -> None:
    print(f"\n{'stage':<7}{'start':>7}  {'domain':<24}{'requested':>10}{'realized':>10}{'samples':>10}")
    for row in stages:
        shown = {d for d, w in row["requested"].items() if w > 0} | {d for d, n in row["samples"].items() if n > 0}
        for d in sorted(shown):
            print(
                f"{row['stage']:<7}{row['start']:>7}  {d:<24}{row['requested'].get(d, 0.0):>10.4f}"
                f"{row['realized'].get(d, 0.0):>10.4f}{row['samples'].get(d, 0):>10,}"
            )
    faults = [(row["stage"], f) for row in stages for f in row["faults"]]
    for k, f in faults:
        trained = ", ".join(f"{d}: {w:.3f}" for d, w in f["trained"].items() if w > 0)
        print(f"FAULT stage {k}: rank {f['rank']} worker {f['worker']} trained {{{trained}}}: {f['fault']}")
