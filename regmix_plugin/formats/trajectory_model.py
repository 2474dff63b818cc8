"""The trajectory model directory (`regmix fit_trajectory --out`): ``trajectory.json`` and one regressor per domain.

    out/trajectory/trajectory.json         format version, features, domains, target, grid, settings, members
    out/trajectory/regressors/<i>/         one regressor per loss domain (JSON, LightGBM text, ``.npz``; no pickle)
    out/trajectory/members/<k>/<i>/        the K cross-validation fold models (``--search.pessimism``)
    out/trajectory/cv.json                 the cross-validation report

A model fitted on a reuse sweep (``regmix sample --reuse``) records ``reuse`` (the block and its ratios,
:class:`regmix_plugin.formats.reuse.ReuseStructure`) and ``mixture_features`` (its regressors' mixture inputs: the
reduced coordinates); ``weight_domains`` stays the full domain list the model takes and a schedule is written over.

The model itself is :class:`regmix_plugin.models.trajectory.TrajectoryModel`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from regmix_plugin.models.trajectory import TrajectoryModel

TRAJECTORY_FORMAT = 1
TRAJECTORY_FILE = "trajectory.json"


def save_model(model: TrajectoryModel, out: Path, cv: dict | None = None) -> None:
    """Write the model directory atomically: ``trajectory.json`` and one regressor directory per loss domain."""
    from regmix_plugin.atomic import write_json
    from regmix_plugin.formats.model_dir import replacing_model_dir

    with replacing_model_dir(out, TRAJECTORY_FILE, what="a trajectory model directory") as tmp:
        settings = _save_regressors(model, tmp / "regressors")
        members = [
            {"initial_state": m.initial_state.tolist(), "settings": _save_regressors(m, tmp / "members" / f"{k:02d}")}
            for k, m in enumerate(model.members)
        ]
        write_json(
            tmp / TRAJECTORY_FILE,
            {
                "format_version": TRAJECTORY_FORMAT,
                "features": model.features,
                "regressor": model.regressor,
                "weight_domains": model.weight_domains,
                "loss_domains": model.loss_domains,
                "target": model.target,
                "initial_state": model.initial_state.tolist(),
                "grid": model.grid,
                "settings": settings,
                "members": members,
                **model.meta,
            },
        )
        if cv is not None:
            write_json(tmp / "cv.json", cv)


def _save_regressors(model: TrajectoryModel, root: Path) -> dict:
    settings = {}
    for i, d in enumerate(model.loss_domains):
        sub = root / f"{i:03d}"
        sub.mkdir(parents=True)
        model.regressors[d].save(sub)
        settings[d] = model.regressors[d].settings()
    return settings


def load_trajectory_model(path: Path, flag: str = "--model") -> TrajectoryModel:
    """Read a directory written by :func:`save_model` (no pickle: JSON, LightGBM text, ``.npz``)."""
    from regmix_plugin.formats.reuse import ReuseStructure
    from regmix_plugin.models.regressors import load_regressor
    from regmix_plugin.models.trajectory import FEATURE_SETS, TrajectoryModel

    path = Path(path)
    meta_file = path / TRAJECTORY_FILE
    if not meta_file.is_file():
        raise FileNotFoundError(
            f"{flag} {str(path)!r} has no {TRAJECTORY_FILE}; write it with `regmix fit_trajectory --out {path}`"
        )
    meta = json.loads(meta_file.read_text())
    if meta.get("format_version") != TRAJECTORY_FORMAT or meta.get("features") not in FEATURE_SETS:
        raise ValueError(
            f"{flag} {str(path)!r} is trajectory format {meta.get('format_version')!r}; this version "
            f"reads {TRAJECTORY_FORMAT}: re-run `regmix fit_trajectory --out {path}`"
        )

    def regressors(root: Path, settings: dict) -> dict:
        return {
            d: load_regressor(meta["regressor"], root / f"{i:03d}", settings[d])
            for i, d in enumerate(meta["loss_domains"])
        }

    regs = regressors(path / "regressors", meta["settings"])
    reuse = None
    if meta.get("reuse") is not None:
        reuse = ReuseStructure.from_dict(
            meta["reuse"], meta["weight_domains"], f"{flag} {path / TRAJECTORY_FILE} reuse"
        )
    known = {
        "format_version",
        "features",
        "regressor",
        "weight_domains",
        "loss_domains",
        "target",
        "initial_state",
        "grid",
        "settings",
        "members",
    }
    common = (meta["features"], meta["regressor"], meta["weight_domains"], meta["loss_domains"], meta["target"])
    members = [
        TrajectoryModel(
            *common,
            np.array(m["initial_state"], float),
            meta["grid"],
            regressors(path / "members" / f"{k:02d}", m["settings"]),
            reuse=reuse,
        )
        for k, m in enumerate(meta.get("members", []))
    ]
    return TrajectoryModel(
        meta["features"],
        meta["regressor"],
        meta["weight_domains"],
        meta["loss_domains"],
        meta["target"],
        np.array(meta["initial_state"], float),
        meta["grid"],
        regs,
        {k: v for k, v in meta.items() if k not in known},
        members,
        reuse,
    )
