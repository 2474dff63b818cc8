"""An online RegMix-D run's record, under the run's ``out_dir`` (written by ``RegMixDController``).

out_dir/decisions.jsonl                                  one JSON line per decision (stage, checkpoint, observed
                                                         losses, weights, prediction, fault)
out_dir/regmixd/stage-<k>.json                           the decision a data stream entering stage k reads
out_dir/regmixd/fault-stage-<k>-rank-<r>-worker-<w>.json a stream that trained something other than the decision
out_dir/step-*/                                          LitGPT's checkpoints, the controller's observations
"""

from __future__ import annotations

import json
from pathlib import Path

DECISIONS = "decisions.jsonl"
STAGE_DIR = "regmixd"
FAULT_FILE = "fault-stage-{stage}-rank-{rank}-worker-{worker}.json"


def latest_checkpoint(out_dir: Path, batch: int) -> Path | None:
    """The newest ``step-*`` checkpoint of ``out_dir`` with step <= ``batch`` (steps never outnumber batches)."""
    best = None
    for p in Path(out_dir).glob("step-*"):
        try:
            step = int(p.name.split("-", 1)[1])
        except ValueError:
            continue
        if step <= batch and (p / "lit_model.pth").is_file() and (best is None or step > best[0]):
            best = (step, p)
    return None if best is None else best[1]


def read_decisions(path: Path) -> list[dict]:
    """The records of ``decisions.jsonl``; a line cut by a kill is skipped (that decision is made again)."""
    out = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill: that decision is made again
    return out
