"""`regmix prepare`: layouts, formats, counts, idempotency, crash safety and name checks."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from regmix_plugin.__main__ import main as regmix_main
from regmix_plugin.commands.prepare import prepare
from regmix_plugin.formats.manifest import read_manifest
from regmix_plugin.formats.token_chunks import TokenSource

DOCS = {
    "Pile-CC": ["the river city walked slowly"] * 10,
    "Github": ["def return if else for in range"] * 6,
}


def token_count(tokenizer_dir: Path, texts: list[str]) -> int:
    from litgpt.tokenizer import Tokenizer

    tok = Tokenizer(tokenizer_dir)
    return sum(len(tok.encode(t, bos=False, eos=True)) for t in texts)


def write_jsonl(path: Path, records: list[dict], opener=open) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with opener(path, "wt") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def zst_open(path, mode):
    return zstandard.open(path, mode)


def test_dirs_layout_counts_every_token_and_document(tmp_path, tokenizer_dir):
    for domain, texts in DOCS.items():
        write_jsonl(tmp_path / "raw" / domain / "a.jsonl", [{"text": t} for t in texts])
    m = prepare(
        source=str(tmp_path / "raw"),
        tokenizer_dir=tokenizer_dir,
        out_dir=tmp_path / "out",
        val_fraction=0.5,
        num_workers=2,
    )
    assert sorted(m.domains) == ["github", "pile_cc"]  # unsafe labels normalised into directory names
    for raw, texts in DOCS.items():
        stats = m.domains[raw.lower().replace("-", "_")]
        assert stats.sources == [raw]
        assert stats.train.documents + stats.val.documents == len(texts)
        assert stats.val.documents == len(texts) // 2
        assert stats.train.tokens + stats.val.tokens == token_count(tokenizer_dir, texts)
        src = TokenSource(tmp_path / "out" / raw.lower().replace("-", "_") / "train", 1)
        assert src.num_tokens == stats.train.tokens
    on_disk = read_manifest(tmp_path / "out")
    assert on_disk.to_dict() == m.to_dict() and on_disk.tokenizer_hash.startswith("sha256:")
    assert not (tmp_path / "out" / ".prepare-tmp").exists()


def test_official_shard_layout_and_compressed_formats(tmp_path, tokenizer_dir):
    raw = tmp_path / "raw"
    write_jsonl(raw / "arxiv-00000.jsonl.zst", [{"text": "alpha beta"}] * 4, opener=zst_open)
    write_jsonl(raw / "arxiv-00001.jsonl.gz", [{"text": "gamma delta"}] * 4, opener=gzip.open)
    pq.write_table(pa.table({"text": ["zeta eta"] * 3}), raw / "wiki-00000.parquet")
    (raw / "notes-0.txt").write_text("one whole document in a text file")
    m = prepare(
        source=[str(raw)], tokenizer_dir=tokenizer_dir, out_dir=tmp_path / "out", val_fraction=0.0, num_workers=1
    )
    assert {d: s.train.documents for d, s in m.domains.items()} == {"arxiv": 8, "notes": 1, "wiki": 3}
    assert m.domains["arxiv"].train.tokens == token_count(tokenizer_dir, ["alpha beta"] * 4 + ["gamma delta"] * 4)


def test_domain_field_layout_and_separate_val_sources(tmp_path, tokenizer_dir):
    records = [
        {"text": "the river", "meta": {"pile_set_name": "Pile-CC"}},
        {"text": "def return", "meta": {"pile_set_name": "Github"}},
    ] * 5
    write_jsonl(tmp_path / "train" / "00.jsonl", records)
    write_jsonl(tmp_path / "val" / "00.jsonl", [{"text": "held out text", "meta": {"pile_set_name": "Target Web"}}])
    m = prepare(
        source=[str(tmp_path / "train")],
        val_source=[str(tmp_path / "val")],
        tokenizer_dir=tokenizer_dir,
        out_dir=tmp_path / "out",
        domain_field="meta.pile_set_name",
        num_workers=1,
    )
    assert {d: (s.train.documents, s.val.documents) for d, s in m.domains.items()} == {
        "github": (5, 0),
        "pile_cc": (5, 0),
        "target_web": (0, 1),
    }
    assert m.train_domains() == ["github", "pile_cc"] and m.val_domains() == ["target_web"]


def test_rerun_skips_finished_domains_and_redoes_interrupted_ones(tmp_path, tokenizer_dir):
    for domain, texts in DOCS.items():
        write_jsonl(tmp_path / "raw" / domain / "a.jsonl", [{"text": t} for t in texts])
    out = tmp_path / "out"
    prepare(source=str(tmp_path / "raw"), tokenizer_dir=tokenizer_dir, out_dir=out, num_workers=1)
    chunk = next((out / "github" / "train").glob("chunk-*.bin"))
    before = chunk.stat().st_mtime_ns
    # simulate a crash after pile_cc was renamed into place but before the manifest listed it
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["domains"]["pile_cc"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "pile_cc" / "train" / "index.json").unlink()  # the leftover is partial
    (out / ".pile_cc.partial").mkdir()
    (out / "notes").mkdir()  # something of the user's inside out_dir: never touched
    (out / "notes" / "keep.txt").write_text("mine")
    m = prepare(source=str(tmp_path / "raw"), tokenizer_dir=tokenizer_dir, out_dir=out, num_workers=1)
    assert (out / "notes" / "keep.txt").read_text() == "mine"
    assert chunk.stat().st_mtime_ns == before  # the finished domain was not rewritten
    assert (out / "pile_cc" / "train" / "index.json").is_file()
    assert m.domains["pile_cc"].train.documents + m.domains["pile_cc"].val.documents == 10
    assert not (out / ".pile_cc.partial").exists()


def test_split_does_not_depend_on_where_the_corpus_lives(tmp_path, tokenizer_dir):
    texts = [f"document number {i}" for i in range(40)]
    sizes = []
    for place in ("here", "elsewhere/deeper"):
        write_jsonl(tmp_path / place / "raw" / "a" / "x.jsonl", [{"text": t} for t in texts])
        m = prepare(
            source=str(tmp_path / place / "raw"),
            tokenizer_dir=tokenizer_dir,
            out_dir=tmp_path / place / "out",
            val_fraction=0.2,
            num_workers=1,
        )
        sizes.append((m.domains["a"].train.tokens, m.domains["a"].val.tokens, m.domains["a"].val.documents))
    assert sizes[0] == sizes[1] and sizes[0][2] == 8


def test_other_tokenizer_on_same_out_dir_is_refused(tmp_path, tokenizer_dir):
    from regmix_plugin.tokenizer import train_tokenizer

    write_jsonl(tmp_path / "raw" / "a" / "x.jsonl", [{"text": "abc"}] * 3)
    prepare(source=str(tmp_path / "raw"), tokenizer_dir=tokenizer_dir, out_dir=tmp_path / "out", num_workers=1)
    other = train_tokenizer(["something else entirely"] * 3, tmp_path / "tok2", vocab_size=270)
    with pytest.raises(
        ValueError,
        match="tokenizer mismatch: --tokenizer_dir .* but --out_dir .* was prepared with .* use a new --out_dir",
    ):
        prepare(source=str(tmp_path / "raw"), tokenizer_dir=other, out_dir=tmp_path / "out", num_workers=1)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (
            lambda raw: write_jsonl(raw / "a" / "x.jsonl", [{"body": "no text key"}]),
            r"x.jsonl:1 has no string field 'text'; set --text_key",
        ),
        (
            lambda raw: (raw / "a").mkdir(parents=True) or (raw / "a" / "x.jsonl").write_text("{not json\n"),
            r"x.jsonl:1 is not valid JSON",
        ),
        (
            lambda raw: [write_jsonl(raw / n / "x.jsonl", [{"text": "t"}]) for n in ("Web-CC", "web_cc")],
            r"map to the same directory name.*'web_cc'",
        ),
        (lambda raw: raw.mkdir(), r"--source .* holds no"),
    ],
)
def test_bad_sources_give_one_clear_error_and_write_nothing(tmp_path, tokenizer_dir, setup, message):
    raw = tmp_path / "raw"
    setup(raw)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        prepare(source=str(raw), tokenizer_dir=tokenizer_dir, out_dir=tmp_path / "out", num_workers=1)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_cli_accepts_a_single_source_flag(tmp_path, tokenizer_dir, capsys):
    write_jsonl(tmp_path / "raw" / "a" / "x.jsonl", [{"text": "abc def"}] * 3)
    regmix_main(
        [
            "prepare",
            "--source",
            str(tmp_path / "raw"),
            "--tokenizer_dir",
            str(tokenizer_dir),
            "--out_dir",
            str(tmp_path / "out"),
            "--num_workers",
            "1",
        ]
    )
    assert read_manifest(tmp_path / "out").domains["a"].train.documents == 3
