"""The raw-corpus reader shared by `regmix prepare` and the README's offline tokenizer line (issue 9, item 12)."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from regmix_plugin.commands.prepare import prepare
from regmix_plugin.formats.raw_corpus import read_texts
from regmix_plugin.tokenizer import tokenizer_hash, train_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def test_a_tokenizer_trains_offline_from_any_format_prepare_reads(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    with gzip.open(raw / "web-0.jsonl.gz", "wt") as f:
        f.write(json.dumps({"content": "gzip text", "meta": {"set": "Web"}}) + "\n")
    with zstandard.open(raw / "web-1.jsonl.zst", "wt") as f:
        f.write(json.dumps({"content": "zstd text", "meta": {"set": "Code"}}) + "\n")
    pq.write_table(pa.table({"content": ["parquet text"], "meta": [{"set": "Web"}]}), raw / "wiki-0.parquet")
    assert list(read_texts(raw, text_key="content")) == ["gzip text", "zstd text", "parquet text"]
    assert list(read_texts(str(raw), text_key="content", domain_field="meta.set")) == [
        "gzip text",
        "zstd text",
        "parquet text",
    ]
    tok = train_tokenizer(read_texts(raw, text_key="content"), tmp_path / "tok", vocab_size=300)
    # and prepare accepts that tokenizer for that corpus
    m = prepare(
        source=str(raw),
        tokenizer_dir=tok,
        out_dir=tmp_path / "out",
        text_key="content",
        domain_field="meta.set",
        num_workers=1,
        val_fraction=0,
    )
    assert m.tokenizer_hash == tokenizer_hash(tok) and sorted(m.domains) == ["code", "web"]


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout")
def test_the_walkthroughs_outputs_are_ignored_by_git():
    paths = ["raw/code/part-0.jsonl", "data/tiny/manifest.json", "out/tiny/final/lit_model.pth"]
    r = subprocess.run(["git", "check-ignore", *paths], cwd=ROOT, capture_output=True, text=True)
    assert r.stdout.split() == paths
