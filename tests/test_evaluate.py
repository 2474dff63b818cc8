"""`regmix evaluate`: per-domain loss of a LitGPT checkpoint, checked against an independent computation."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import torch
from conftest import tiny_model_config

from regmix_plugin.__main__ import main
from regmix_plugin.commands.evaluate import evaluate


@pytest.fixture
def checkpoint(tmp_path, tokenizer_dir):
    """A LitGPT checkpoint dir as `litgpt download`/`convert` leave it: plain state dict, config, tokenizer."""
    from litgpt import GPT, Config
    from litgpt.utils import copy_config_files, save_config

    torch.manual_seed(0)
    config = Config(**tiny_model_config(vocab=258))
    model = GPT(config)
    out = tmp_path / "ckpt"
    out.mkdir()
    torch.save(model.state_dict(), out / "lit_model.pth")
    save_config(config, out)
    copy_config_files(tokenizer_dir, out)
    return out, model


def _reference(model, prepared, domain: str, seq: int, blocks: int) -> float:
    """Mean token cross-entropy with litgpt's own loss, over evenly spaced val blocks read by litdata."""
    from litdata import StreamingDataset, TokensLoader
    from litgpt.utils import chunked_cross_entropy

    ds = StreamingDataset(str(prepared / domain / "val"), item_loader=TokensLoader(block_size=seq + 1), shuffle=False)
    picks = np.unique(np.linspace(0, len(ds) - 1, min(blocks, len(ds))).round().astype(int))
    batch = torch.stack([torch.as_tensor(np.asarray(ds[int(i)])) for i in picks]).long()
    with torch.no_grad():
        return float(chunked_cross_entropy(model(batch[:, :-1]), batch[:, 1:]))


def test_evaluate_scores_every_val_domain_on_a_fixed_budget(checkpoint, prepared, tmp_path):
    ckpt, model = checkpoint
    out = tmp_path / "losses.csv"
    main(
        [
            "evaluate",
            "--checkpoint_dir",
            str(ckpt),
            "--data_path",
            str(prepared),
            "--out",
            str(out),
            "--val_tokens",
            "320",
            "--batch_size",
            "3",
        ]
    )
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["domain"] for r in rows] == ["code", "prose", "tiny"]
    from regmix_plugin.formats.token_chunks import TokenSource

    have = {d: TokenSource(prepared / d / "val", 33).num_blocks for d in ("code", "prose", "tiny")}
    assert [int(r["tokens"]) for r in rows] == [32 * min(10, have[d]) for d in ("code", "prose", "tiny")]
    model.eval()
    for r in rows:
        assert float(r["val_loss"]) == pytest.approx(_reference(model, prepared, r["domain"], 32, 10), rel=1e-5)
    # the budget is a fixed selection: scoring twice gives identical numbers
    again = evaluate(ckpt, prepared, None, val_tokens=320, batch_size=5)
    assert again == pytest.approx({r["domain"]: float(r["val_loss"]) for r in rows}, rel=1e-6)


def test_evaluate_refuses_a_tokenizer_mismatch_and_incomplete_checkpoints(checkpoint, prepared, tmp_path):
    from regmix_plugin.tokenizer import train_tokenizer

    ckpt, _ = checkpoint
    other = tmp_path / "other"
    shutil.copytree(ckpt, other)
    train_tokenizer(["another corpus entirely, another vocabulary"] * 4, tmp_path / "tok2", 300)
    shutil.copy(tmp_path / "tok2" / "tokenizer.json", other / "tokenizer.json")
    with pytest.raises(ValueError, match=r"tokenizer mismatch: --checkpoint_dir .*`regmix prepare --tokenizer_dir"):
        evaluate(other, prepared, tmp_path / "x.csv")
    (ckpt / "lit_model.pth").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks lit_model.pth; pass a LitGPT checkpoint directory"):
        evaluate(ckpt, prepared, tmp_path / "x.csv")
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(FileNotFoundError, match=r"has no tokenizer.json or tokenizer.model"):
        evaluate(bare, prepared, tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()
