"""Mistakes the stock `litgpt pretrain` loop used to train through (issue 9): another tokenizer, a model
vocabulary smaller than the corpus's token ids, a truncated chunk. MixtureData refuses each at set-up,
before the first step, and `regmix sweep` refuses the vocabulary before starting a run."""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import pretrain_config

from regmix_plugin.formats.manifest import read_manifest
from regmix_plugin.litgpt_compat import run_pretrain

WEIGHTS = {"code": 0.5, "prose": 0.5}


def _pretrain(tmp_path: Path, data: Path, tokenizer_dir: Path, **model) -> Path:
    cfg = pretrain_config(tmp_path / "out", data, tokenizer_dir, WEIGHTS)
    cfg["model_config"].update(model)
    run_pretrain(cfg, tmp_path / "recipe.yaml")
    return tmp_path / "out"


def test_litgpt_pretrain_with_another_tokenizer_is_refused(tmp_path, prepared, tokenizer_dir):
    from regmix_plugin.tokenizer import train_tokenizer

    other = train_tokenizer(["a completely different text for another vocabulary"] * 4, tmp_path / "tok2", 300)
    with pytest.raises(ValueError) as e:
        _pretrain(tmp_path, prepared, other)
    assert str(e.value).startswith(
        f"tokenizer mismatch: --tokenizer_dir {str(other)!r} is sha256:"
    ) and f"but --data.data_path {str(prepared)!r} was prepared with sha256:" in str(e.value)
    assert str(e.value).endswith(
        "use the tokenizer the corpus was prepared with, or re-run `regmix prepare` with this one"
    )  # the message sweep and evaluate give
    assert not (tmp_path / "out" / "final").exists()
    _pretrain(tmp_path / "ok", prepared, tokenizer_dir)  # the corpus's own tokenizer trains
    assert (tmp_path / "ok" / "out" / "final" / "lit_model.pth").is_file()


def test_a_model_vocabulary_below_the_corpus_token_ids_is_refused_at_setup(tmp_path, prepared, tokenizer_dir):
    manifest = read_manifest(prepared)
    top, ids = manifest.max_token_id(), manifest.vocab_size
    assert 128 <= top < ids  # the corpus uses ids above 128 (the byte alphabet), not every id
    with pytest.raises(ValueError) as e:
        _pretrain(tmp_path, prepared, tokenizer_dir, vocab_size=128, padded_vocab_size=128)
    assert str(e.value).startswith(
        f"token id {top} >= model padded_vocab_size 128 in --data.data_path {str(prepared)!r}: the corpus was "
        f"prepared with a tokenizer of {ids} ids; set model_config.padded_vocab_size (and vocab_size) to at least {ids}"
    )


def test_a_truncated_chunk_is_refused_at_setup_naming_the_file_and_the_fix(tmp_path, prepared, tokenizer_dir):
    data = tmp_path / "data"
    shutil.copytree(prepared, data)
    chunk = sorted((data / "prose" / "train").glob("chunk-*.bin"))[1]
    size = chunk.stat().st_size
    os.truncate(chunk, size - 100)
    with pytest.raises(ValueError) as e:
        _pretrain(tmp_path, data, tokenizer_dir)
    repair = shlex.join(
        ["regmix", "prepare", *read_manifest(data).domains["prose"].prepared_with, "--out_dir", str(data)]
    )
    assert str(e.value) == (
        f"--data.data_path {str(data)!r}: the prepared corpus {str(data)!r} is damaged (1 domain(s)):\n"
        f"    domain 'prose': {chunk} is {size - 100:,} bytes, the manifest says {size:,} (truncated?)\n"
        f"    repair (re-does only the damaged domains, keeps the others): {repair}"
    )  # was: "could not broadcast input array from shape (0,) into shape (33,)" mid-run


def test_sweep_refuses_a_recipe_whose_vocabulary_is_too_small(tmp_path, prepared, tokenizer_dir):
    from regmix_plugin.commands.sweep import EvalArgs, sweep
    from regmix_plugin.formats.mixture_table import write_mixtures

    cfg = pretrain_config(Path("unused"), prepared, tokenizer_dir, None)
    cfg["model_config"].update(vocab_size=200, padded_vocab_size=200)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(cfg))
    write_mixtures(tmp_path / "m.csv", {"m1": {"code": 0.5, "prose": 0.5, "tiny": 0.0}}, ["code", "prose", "tiny"])
    top = read_manifest(prepared).max_token_id()
    with pytest.raises(
        ValueError,
        match=rf"token id {top} >= model padded_vocab_size 200 \(--recipe .*r\.yaml' "
        r"model_config\)",
    ):
        sweep(
            mixtures=tmp_path / "m.csv",
            data_path=prepared,
            recipe=tmp_path / "r.yaml",
            out_dir=tmp_path / "s",
            eval=EvalArgs(points=0),
        )
    assert not (tmp_path / "s" / "runs").exists()
