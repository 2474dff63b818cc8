"""`regmix prepare` on the inputs a newcomer gets wrong first (issue 9): a mistyped --domain_field, labels
that collide or are not ASCII, a truncated input, a truncated chunk, and a disk that fills up."""

from __future__ import annotations

import gzip
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from regmix_plugin.commands.prepare import prepare
from regmix_plugin.formats.manifest import read_manifest

PILE = [
    {"text": "the river city", "meta": {"pile_set_name": "Pile-CC"}},
    {"text": "def return if", "meta": {"pile_set_name": "Github"}},
]


def write_jsonl(path: Path, records: list[dict], opener=open) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with opener(path, "wt") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return path


def run_cli(*args: str, preexec=None) -> subprocess.CompletedProcess:
    """``regmix ARGS`` in a child process (for the tests that limit what that process may write)."""
    return subprocess.run(
        [sys.executable, "-m", "regmix_plugin", *args], capture_output=True, text=True, preexec_fn=preexec, timeout=300
    )


@pytest.fixture
def cli(capsys):
    """``regmix ARGS`` in this process: ``(exit code, stdout, stderr)``, as the user sees them."""
    from regmix_plugin.__main__ import main

    def run(*args: str) -> subprocess.CompletedProcess:
        code = 0
        try:
            main(list(args))
        except SystemExit as e:
            code = e.code
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    return run


# ------------------------------------------------------------------------------------- 2. --domain_field
def test_mistyped_domain_field_is_an_error_naming_the_field_and_the_keys(tmp_path, tokenizer_dir, cli):
    write_jsonl(tmp_path / "raw" / "00.jsonl", PILE * 5)
    r = cli(
        "prepare",
        "--source",
        str(tmp_path / "raw"),
        "--tokenizer_dir",
        str(tokenizer_dir),
        "--out_dir",
        str(tmp_path / "out"),
        "--domain_field",
        "meta.pile_set",
        "--num_workers",
        "1",
    )
    assert r.returncode == 2, r.stderr
    assert "document 1 has no field 'meta.pile_set'" in r.stderr
    assert "keys found in the first document of 00.jsonl: text, meta, meta.pile_set_name" in r.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()
    # skipping every document leaves nothing: still an error, naming the field and the keys
    r = cli(
        "prepare",
        "--source",
        str(tmp_path / "raw"),
        "--tokenizer_dir",
        str(tokenizer_dir),
        "--out_dir",
        str(tmp_path / "out"),
        "--domain_field",
        "meta.pile_set",
        "--num_workers",
        "1",
        "--on_missing_domain",
        "skip",
    )
    assert r.returncode == 2
    assert "nothing was prepared: no document has the field 'meta.pile_set' (--domain_field; 10 dropped)" in r.stderr
    assert "meta.pile_set_name" in r.stderr


def test_skipped_documents_are_counted_in_the_manifest_and_printed(tmp_path, tokenizer_dir, capsys):
    write_jsonl(tmp_path / "raw" / "00.jsonl", PILE * 3 + [{"text": "no label"}] * 4 + [{"text": "x", "meta": {}}])
    m = prepare(
        source=str(tmp_path / "raw"),
        tokenizer_dir=tokenizer_dir,
        out_dir=tmp_path / "out",
        domain_field="meta.pile_set_name",
        on_missing_domain="skip",
        num_workers=1,
        val_fraction=0,
    )
    assert {d: s.train.documents for d, s in m.domains.items()} == {"github": 3, "pile_cc": 3}
    assert m.dropped == {"missing_domain_field": 5}
    assert read_manifest(tmp_path / "out").dropped == {"missing_domain_field": 5}
    assert "dropped 5 document(s): 5 missing domain field (meta.pile_set_name)" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------- 9. labels
def test_colliding_labels_in_a_field_are_refused_listing_them(tmp_path, tokenizer_dir):
    labels = ["Pile-CC", "pile cc", "pile_cc", "Github"]
    write_jsonl(tmp_path / "raw" / "00.jsonl", [{"text": "t", "meta": {"set": lab}} for lab in labels])
    with pytest.raises(ValueError) as e:
        prepare(
            source=str(tmp_path / "raw"),
            tokenizer_dir=tokenizer_dir,
            out_dir=tmp_path / "out",
            domain_field="meta.set",
            num_workers=1,
        )
    assert str(e.value) == (
        "these domain labels map to the same directory name: ['Pile-CC', 'pile cc', 'pile_cc'] -> 'pile_cc'. "
        "Rename them so they differ in letters or digits"
    )
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_a_label_colliding_with_an_earlier_runs_domain_is_refused(tmp_path, tokenizer_dir):
    write_jsonl(tmp_path / "a" / "Pile-CC" / "x.jsonl", [{"text": "t"}])
    prepare(source=str(tmp_path / "a"), tokenizer_dir=tokenizer_dir, out_dir=tmp_path / "out", num_workers=1)
    write_jsonl(tmp_path / "b" / "pile cc" / "x.jsonl", [{"text": "t"}])
    with pytest.raises(ValueError, match=r"\['Pile-CC', 'pile cc'\] -> 'pile_cc'"):
        prepare(
            source=[str(tmp_path / "a"), str(tmp_path / "b")],
            tokenizer_dir=tokenizer_dir,
            out_dir=tmp_path / "out",
            num_workers=1,
        )


def test_non_ascii_labels_are_transliterated_or_refused_never_mangled(tmp_path, tokenizer_dir):
    from regmix_plugin.weights import normalize_domain

    assert normalize_domain("Ünïcode!") == "unicode"  # was 'n_code'
    assert normalize_domain("Gutenberg (PG-19)") == "gutenberg_pg_19"
    with pytest.raises(ValueError, match=r"domain label '维基-zh' has letters or digits with no ASCII form \(维基\)"):
        normalize_domain("维基-zh")  # was 'zh'
    write_jsonl(tmp_path / "raw" / "00.jsonl", [{"text": "t", "set": "Ünïcode!"}, {"text": "u", "set": "Café"}])
    m = prepare(
        source=str(tmp_path / "raw"),
        tokenizer_dir=tokenizer_dir,
        out_dir=tmp_path / "out",
        domain_field="set",
        num_workers=1,
        val_fraction=0,
    )
    assert {d: s.sources for d, s in m.domains.items()} == {"cafe": ["Café"], "unicode": ["Ünïcode!"]}
    write_jsonl(tmp_path / "raw2" / "00.jsonl", [{"text": "t", "set": "维基"}])
    with pytest.raises(ValueError, match="no ASCII form"):
        prepare(
            source=str(tmp_path / "raw2"),
            tokenizer_dir=tokenizer_dir,
            out_dir=tmp_path / "out2",
            domain_field="set",
            num_workers=1,
        )


# ------------------------------------------------------------------------------------- 4. truncation
def test_truncated_gzip_input_names_the_file(tmp_path, tokenizer_dir, cli):
    path = write_jsonl(
        tmp_path / "raw" / "a-0.jsonl.gz", [{"text": f"document {i} " * 20} for i in range(200)], opener=gzip.open
    )
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    r = cli(
        "prepare",
        "--source",
        str(tmp_path / "raw"),
        "--tokenizer_dir",
        str(tokenizer_dir),
        "--out_dir",
        str(tmp_path / "out"),
        "--num_workers",
        "1",
    )
    assert r.returncode == 2
    assert f"regmix prepare: error: {path} is truncated or corrupt (EOFError" in r.stderr
    assert "Traceback" not in r.stderr


def _corpus(tmp_path: Path, tokenizer_dir: Path) -> Path:
    for domain, word in (("code", "def return "), ("prose", "the river ")):
        write_jsonl(tmp_path / "raw" / domain / "x.jsonl", [{"text": word * 30}] * 40)
    prepare(
        source=str(tmp_path / "raw"),
        tokenizer_dir=tokenizer_dir,
        out_dir=tmp_path / "out",
        num_workers=1,
        chunk_bytes="1KB",
        val_fraction=0.1,
    )
    return tmp_path / "out"


def test_truncated_chunk_is_found_by_verify_and_redone_by_a_rerun(tmp_path, tokenizer_dir, cli):
    out = _corpus(tmp_path, tokenizer_dir)
    manifest = read_manifest(out)
    chunks = manifest.domains["code"].chunks
    assert len([c for c in chunks if c.startswith("train/chunk-")]) > 2 and "train/index.json" in chunks
    chunk = out / "code" / "train" / "chunk-0-1.bin"
    full = chunk.read_bytes()
    prose_chunk = out / "prose" / "train" / "chunk-0-0.bin"
    prose_before = prose_chunk.stat().st_mtime_ns
    os.truncate(chunk, len(full) // 2)
    before = (out / "manifest.json").read_bytes()
    # --verify without --source only reads and reports: exit 2, the file named, the repair command, nothing changed
    for _ in range(2):  # and it says so again: the damage is still there, nothing "fixed" it by forgetting it
        r = cli("prepare", "--verify", "true", "--out_dir", str(out))
        assert r.returncode == 2, r.stderr
        assert f"  code: {chunk} is {len(full) // 2:,} bytes, the manifest says {len(full):,} (truncated?)" in r.stderr
        assert "1 damaged domain(s) in --out_dir" in r.stderr and "nothing was changed" in r.stderr
        assert "re-doing" not in r.stdout + r.stderr
        assert (out / "manifest.json").read_bytes() == before
    repair = r.stderr.split("Repair (re-does only the damaged domains): ")[1].strip()
    assert repair == (
        f"regmix prepare --source {(tmp_path / 'raw').resolve()} --tokenizer_dir "
        f"{Path(tokenizer_dir).resolve()} --val_fraction 0.1 --chunk_bytes 1KB --out_dir {out}"
    )
    # the printed command, run word for word, prepares it again byte for byte and leaves the healthy domain alone
    r = cli(*shlex.split(repair)[1:])
    assert r.returncode == 0, r.stderr
    assert "domain code is damaged, re-doing it" in r.stdout
    m = read_manifest(out)
    bins = lambda c: {k: v for k, v in c.items() if k.endswith(".bin")}  # noqa: E731 (index.json holds a path)
    assert chunk.read_bytes() == full and bins(m.domains["code"].chunks) == bins(chunks)
    assert prose_chunk.stat().st_mtime_ns == prose_before
    r = cli("prepare", "--verify", "true", "--out_dir", str(out))
    assert r.returncode == 0 and "verified 2 domain(s)" in r.stdout, r.stderr


def test_verify_names_a_deleted_chunk_and_training_names_the_damage(tmp_path, tokenizer_dir, cli):
    from regmix_plugin.pretrain.mixture_data import MixtureData

    out = _corpus(tmp_path, tokenizer_dir)
    gone = out / "prose" / "train" / "chunk-0-0.bin"
    gone.unlink()
    before = (out / "manifest.json").read_bytes()
    r = cli("prepare", "--verify", "true", "--out_dir", str(out))
    assert r.returncode == 2 and f"  prose: {gone} is missing" in r.stderr, r.stderr
    assert (out / "manifest.json").read_bytes() == before
    # the data module then names the damage (not "unknown domain 'prose'": verify did not unlist it)
    dm = MixtureData(data_path=out, weights={"prose": 0.5, "code": 0.5}, num_workers=0)
    with pytest.raises(ValueError, match=r"damaged \(1 domain\(s\)\):\n    domain 'prose': .*chunk-0-0.bin is missing"):
        dm.setup()


def test_a_source_without_the_damaged_domain_changes_nothing(tmp_path, tokenizer_dir, cli):
    out = _corpus(tmp_path, tokenizer_dir)
    os.truncate(out / "code" / "train" / "chunk-0-1.bin", 5)
    write_jsonl(tmp_path / "other" / "web" / "x.jsonl", [{"text": "the city " * 20}] * 10)
    before = (out / "manifest.json").read_bytes()
    for extra in ((), ("--verify", "true")):
        r = cli(
            "prepare",
            "--source",
            str(tmp_path / "other"),
            "--tokenizer_dir",
            str(tokenizer_dir),
            "--out_dir",
            str(out),
            "--num_workers",
            "1",
            "--chunk_bytes",
            "1KB",
            "--val_fraction",
            "0.1",
            *extra,
        )
        assert r.returncode == 2, r.stderr
        assert "damaged domain(s) code of --out_dir" in r.stderr and "have no documents in --source" in r.stderr
        assert f"regmix prepare --source {(tmp_path / 'raw').resolve()} " in r.stderr
        assert (out / "manifest.json").read_bytes() == before
        assert not (out / "web").exists() and not (out / ".prepare-tmp").exists()


def test_a_rerun_without_verify_checks_sizes_and_verify_checks_content(tmp_path, tokenizer_dir, capsys):
    out = _corpus(tmp_path, tokenizer_dir)
    chunk = out / "prose" / "train" / "chunk-0-0.bin"
    full = chunk.read_bytes()
    os.truncate(chunk, 10)
    prepare(
        source=str(tmp_path / "raw"),
        tokenizer_dir=tokenizer_dir,
        out_dir=out,
        num_workers=1,
        chunk_bytes="1KB",
        val_fraction=0.1,
    )
    assert "domain prose is damaged" in capsys.readouterr().out and chunk.read_bytes() == full
    # same size, different bytes: only the checksum sees it
    chunk.write_bytes(full[:-2] + bytes([full[-2] ^ 1, full[-1]]))
    prepare(
        source=str(tmp_path / "raw"),
        tokenizer_dir=tokenizer_dir,
        out_dir=out,
        num_workers=1,
        chunk_bytes="1KB",
        val_fraction=0.1,
    )
    assert "damaged" not in capsys.readouterr().out
    prepare(
        source=str(tmp_path / "raw"),
        tokenizer_dir=tokenizer_dir,
        out_dir=out,
        num_workers=1,
        chunk_bytes="1KB",
        val_fraction=0.1,
        verify=True,
    )
    assert f"domain prose is damaged, re-doing it: {chunk} does not match its SHA-256" in capsys.readouterr().out
    assert chunk.read_bytes() == full


# ------------------------------------------------------------------------------------------ 10. disk full
@pytest.mark.parametrize(
    ("repeat", "error"), [(100, r"\(36030 requested and \d+ written\)"), (50, r"\(File too large\)")]
)
def test_disk_full_names_the_out_dir_and_space_needed_and_cleans_up(tmp_path, tokenizer_dir, repeat, error):
    """A real OS-level write failure: the prepare process may write no file over 64 KB (RLIMIT_FSIZE).

    With ``repeat`` 100 one input file's temporary tokens already do not fit (numpy's short write, the
    message of the issue); with 50 they fit and the domain's chunk (all files together) does not (EFBIG
    from litdata's writer). SIGXFSZ is ignored, as the kernel then fails the write instead of killing the
    process.
    """
    import resource
    import signal

    for i in range(6):
        write_jsonl(tmp_path / "raw" / "big" / f"x{i}.jsonl", [{"text": f"the river {i} " * repeat}] * 30)
    write_jsonl(tmp_path / "raw" / "a_small" / "x.jsonl", [{"text": "def return"}] * 5)
    limit = 64 * 1024

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = tmp_path / "out"
    args = [
        "prepare",
        "--source",
        str(tmp_path / "raw"),
        "--tokenizer_dir",
        str(tokenizer_dir),
        "--out_dir",
        str(out),
        "--num_workers",
        "1",
        "--chunk_bytes",
        "1MB",
        "--val_fraction",
        "0",
    ]
    r = run_cli(*args, preexec=limited)
    assert r.returncode == 2, r.stderr
    message = r.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        f"regmix prepare: error: out of disk space writing to --out_dir {re.escape(repr(str(out)))} {error}: a "
        r"re-run needs about [\d.]+ KB free there for the [67] unfinished input file\(s\) "
        r"\([\d.]+ [KMGT]?B free now\)\. "
        r"Free some space or choose another --out_dir, then re-run; the (0|1) finished domain\(s\) are kept and "
        r"the temporary files were removed",
        message,
    ), message
    assert "Traceback" not in r.stderr
    left = sorted(p.name for p in out.iterdir())
    assert left in ([], ["a_small", "manifest.json"])  # no .prepare-tmp, no .big.partial
    if repeat == 50:  # the small domain was finished before the big one failed, and is kept
        assert left == ["a_small", "manifest.json"] and sorted(read_manifest(out).domains) == ["a_small"]
        need = float(re.search(r"needs about ([\d.]+) KB", message)[1])
        assert 2 * 6 * 18_030 * 2 / 1000 <= need < 500  # 6 files of 18,030 uint16 tokens, twice: measured
    # with room again, the same command finishes
    m = prepare(
        source=str(tmp_path / "raw"),
        tokenizer_dir=tokenizer_dir,
        out_dir=out,
        num_workers=1,
        chunk_bytes="1MB",
        val_fraction=0,
    )
    assert m.domains["big"].train.documents == 180 and not (out / ".prepare-tmp").exists()
