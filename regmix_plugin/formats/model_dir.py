"""The fitted-model directory written by ``regmix fit`` and read by ``predict``, ``optimize`` and the demo.

    out/model/model.json            format version, regressor kind and settings, domains, target, CV summary,
                                    provenance; ``reuse`` and ``features`` when fitted in reduced coordinates
    out/model/linear.json | lightgbm.txt | gp.npz | bimix.json | mixing_law.json
                                    the regressor itself (never a pickle: loading runs no code)
    out/model/cv.json, cv_predictions.csv, interactions.csv, *.png    diagnostics

The directory is written to a temporary directory and renamed into place (:func:`model_dir_writer`), so it
exists whole or not at all.

A model fitted on mixtures that carry a reuse structure (``regmix sample --reuse``) records it as ``reuse`` (the
block and its ratios, :class:`regmix_plugin.formats.reuse.ReuseStructure`) and its regressor's inputs as
``features``: the reduced coordinates (``@block`` total, then the free domains). ``domains`` stays the full
domain list: :meth:`FittedModel.predict` takes full mixtures and reduces them itself.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from regmix_plugin.atomic import atomic_dir
from regmix_plugin.formats.document import read_document
from regmix_plugin.formats.reuse import ReuseStructure

#: Bump when a model directory written by this version cannot be read by the previous reader (or vice versa).
MODEL_FORMAT = 1
MODEL_FILE = "model.json"
#: The regressor kinds a model directory may hold: the keys of ``regressors.REGRESSORS``, without importing
#: scikit-learn here. The last two are parametric laws (``regmix_plugin.models.laws``): ``optimize`` solves them
#: directly.
REGRESSOR_KINDS = ("linear", "gp", "lightgbm", "bimix", "mixing_law")
LAW_KINDS = ("bimix", "mixing_law")


@dataclass
class FittedModel:
    """A model directory loaded back: the regressor, its domains and what it predicts."""

    path: Path
    regressor: object
    domains: list[str]
    meta: dict
    reuse: ReuseStructure | None = None
    """The block the model was fitted with (its regressor sees reduced coordinates), or None."""

    def features(self, weights: np.ndarray) -> np.ndarray:
        """Full mixtures (rows x ``domains``) -> the regressor's inputs (the reduced coordinates under reuse)."""
        weights = np.asarray(weights, float)
        return weights if self.reuse is None else self.reuse.reduce(weights)

    def predict(self, weights: np.ndarray) -> np.ndarray:
        """The model's target for full mixtures (rows x ``domains``)."""
        return np.asarray(self.regressor.predict(self.features(weights)), float)


def read_model_meta(path: Path, flag: str = "--model") -> dict:
    """Read and check a model directory's ``model.json``, refusing one written in another format version."""
    path = Path(path)
    meta = read_document(
        path / MODEL_FILE,
        f"{flag} {str(path)!r} has no {MODEL_FILE}; write it with `regmix fit --out {path}`",
        f"re-run `regmix fit --out {path}`",
    )
    version = meta.get("format_version")
    if version != MODEL_FORMAT or meta.get("regressor") not in REGRESSOR_KINDS:
        raise ValueError(
            f"{flag} {str(path)!r} was written by regmix-plugin {meta.get('regmix_plugin_version', '?')} in model "
            f"format {version!r} (regressor {meta.get('regressor')!r}); this version reads format {MODEL_FORMAT}. "
            f"Re-run `regmix fit --out {path}` with this version"
        )
    return meta


def load_fitted(path: Path, flag: str = "--model") -> FittedModel:
    """Read a model directory written by `regmix fit`: its metadata and its regressor."""
    from regmix_plugin.models.regressors import load_regressor

    meta = read_model_meta(path, flag)
    regressor = load_regressor(meta["regressor"], Path(path), meta["settings"])
    return FittedModel(Path(path), regressor, meta["domains"], meta, model_reuse(meta, path, flag))


def model_reuse(meta: dict, path: Path, flag: str = "--model") -> ReuseStructure | None:
    """The reuse structure a model was fitted with (``model.json``'s ``reuse``), or None."""
    if meta.get("reuse") is None:
        return None
    return ReuseStructure.from_dict(meta["reuse"], meta["domains"], f"{flag} {str(path)!r} {MODEL_FILE} reuse")


@contextmanager
def model_dir_writer(out: Path, flag: str = "--out"):
    """Yield an empty temporary directory; on success it replaces ``out`` in one rename.

    Refuses to replace anything that is not an earlier model directory (a user's data is never deleted).
    """
    with replacing_model_dir(out, MODEL_FILE, flag) as tmp:
        yield tmp


@contextmanager
def replacing_model_dir(out: Path, marker: str, flag: str = "--out", what: str = "a model directory"):
    """Yield an empty temporary directory that replaces ``out`` in one rename on success, if ``out`` is new, empty
    or an earlier model (it holds ``marker``); anything else is refused, so a user's data is never deleted."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / marker).exists())):
        raise ValueError(f"{flag} {str(out)!r} exists and is not {what}; choose a new or empty path")
    with atomic_dir(out) as tmp:
        yield tmp
