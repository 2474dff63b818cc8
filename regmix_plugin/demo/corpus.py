"""Build the demo's multi-domain text corpus from material every Python installation already has.

Nothing is committed and nothing is downloaded: the five domains are read (or generated) at run time::

    code      Python standard-library sources (``sysconfig.get_paths()['stdlib']``, tests excluded)
    docs      ``pydoc_data.topics`` plus pydoc-style API text (docstrings) of other stdlib modules
    prose     long descriptions of the installed distributions (README markdown/reST, code blocks removed)
    licenses  licence texts in the installed distributions' ``*.dist-info`` folders, duplicates dropped
    math      arithmetic word problems with worked solutions, generated from a seed

The target domain is ``prose`` (``DEMO_TARGET``), the analogue of the RegMix paper's Pile-CC: it is the
broadest natural-language domain, so its validation loss stands for general quality, while code, API
docs, licences and arithmetic are narrow registers. ``code`` and ``docs`` draw from disjoint halves of the
stdlib files, so no module appears in both.

Selection is deterministic: sources are sorted, then shuffled with a seed, and each domain is cut at a
character cap, so two builds on the same machine write identical bytes. Output, as `regmix prepare` reads it::

    OUT/<domain>/<domain>-00000.jsonl   # one {"text": ...} object per line, one document per line
    OUT/corpus.json                     # what went in: sources, documents, characters, sha256 per domain

    python -c "from regmix_plugin.demo.corpus import build_demo_corpus; build_demo_corpus('demo/corpus')"
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import os
import platform
import random
import re
import sysconfig
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from regmix_plugin.atomic import atomic_path, write_json
from regmix_plugin.weights import normalize_domain

DEMO_TARGET = "prose"
#: Default character cap per domain: unequal on purpose (the natural mixture should not be uniform), and sized
#: for the 2-core demo (~4 MB in all: tokenizer training and `prepare` take seconds, proxies see a fraction).
DEFAULT_MAX_CHARS = {"code": 1_500_000, "docs": 1_000_000, "prose": 800_000, "licenses": 500_000, "math": 300_000}
DEMO_DOMAINS = tuple(DEFAULT_MAX_CHARS)
CORPUS_MANIFEST = "corpus.json"
FORMAT_VERSION = 1
_SKIP_DIRS = {
    "test",
    "tests",
    "idle_test",
    "site-packages",
    "dist-packages",
    "__pycache__",
    "lib-dynload",
    "encodings",
    "idlelib",
    "lib2to3",
    "turtledemo",
    "ensurepip",
}
_LICENSE_NAME = re.compile(r"LICEN[CS]E|COPYING|NOTICE", re.IGNORECASE)


def build_demo_corpus(
    out_dir: str | Path,
    max_chars: int | Mapping[str, int] | None = None,
    seed: int = 0,
    max_doc_chars: int = 4_000,
) -> dict:
    """Write the demo corpus to ``out_dir`` and return its manifest (also written to ``corpus.json``).

    ``max_chars`` caps each domain: one int for all domains, or ``{domain: cap}`` overriding
    ``DEFAULT_MAX_CHARS``. Documents longer than ``max_doc_chars`` are split at paragraph or line breaks; the
    default of 4000 gives each domain 150-450 documents, so even a 1-5% val split holds several of the target's.
    """
    caps = _resolve_caps(max_chars)
    if max_doc_chars < 100:
        raise ValueError(f"max_doc_chars={max_doc_chars} is too small; use at least 100 (default 4000)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # A manifest left from an earlier build must not vouch for shards this build is about to replace.
    (out_dir / CORPUS_MANIFEST).unlink(missing_ok=True)
    stdlib = _stdlib_files()
    random.Random(f"regmix-demo:{seed}:stdlib").shuffle(stdlib)
    sources = {
        "code": ("Python standard-library source files", _code_sources(stdlib[0::2])),
        "docs": ("pydoc_data.topics and stdlib API docstrings", _docs_sources(stdlib[1::2], seed)),
        "prose": ("installed distributions' long descriptions", _prose_sources(seed)),
        "licenses": ("licence files in installed *.dist-info", _license_sources(seed)),
        "math": ("generated arithmetic word problems", _math_sources(seed)),
    }
    domains = {}
    for name in DEMO_DOMAINS:
        kind, iterator = sources[name]
        texts, used = _take(iterator, caps[name], max_doc_chars)
        if not texts:
            raise ValueError(f"demo domain {name!r} found no text ({kind}); is this a complete Python installation?")
        domain = normalize_domain(name)
        shard, digest = write_jsonl(out_dir / domain, domain, texts)
        domains[domain] = {
            "source": kind,
            "documents": len(texts),
            "characters": sum(map(len, texts)),
            "max_chars": caps[name],
            "sha256": digest,
            "shards": [f"{domain}/{shard}"],
            "sources_sha256": hashlib.sha256("\n".join(used).encode()).hexdigest(),
            "sources": used,
        }
    manifest = {
        "format_version": FORMAT_VERSION,
        "target": DEMO_TARGET,
        "seed": seed,
        "max_doc_chars": max_doc_chars,
        "python": platform.python_version(),
        "domains": domains,
    }
    write_json(out_dir / CORPUS_MANIFEST, manifest)
    return manifest


def write_jsonl(domain_dir: str | Path, domain: str, texts: Iterable[str]) -> tuple[str, str]:
    """Atomically write ``texts`` as ``<domain>-00000.jsonl``, one ``{"text": ...}`` per line.

    Removes other ``<domain>-*.jsonl`` shards left by an earlier build. Returns (shard name, sha256 of bytes).
    """
    domain_dir = Path(domain_dir)
    name = f"{domain}-00000.jsonl"
    digest = hashlib.sha256()
    with atomic_path(domain_dir / name) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for text in texts:
            line = json.dumps({"text": text}) + "\n"  # ASCII-escaped: no U+2028 and kin to split a line
            digest.update(line.encode("utf-8"))
            f.write(line)
    for stale in domain_dir.glob(f"{domain}-*.jsonl"):
        if stale.name != name:
            stale.unlink()
    return name, digest.hexdigest()


def read_texts(root: str | Path, domains: Iterable[str] | None = None) -> Iterator[str]:
    """Yield the ``text`` of every document in ``root/<domain>/*.jsonl`` (all domains, or ``domains``), by path."""
    wanted = None if domains is None else set(domains)
    for path in sorted(Path(root).glob("*/*.jsonl")):
        if wanted is not None and path.parent.name not in wanted:
            continue
        with open(path, encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)["text"]


def _resolve_caps(max_chars: int | Mapping[str, int] | None) -> dict[str, int]:
    if max_chars is None:
        caps = dict(DEFAULT_MAX_CHARS)
    elif isinstance(max_chars, Mapping):
        unknown = sorted(set(max_chars) - set(DEMO_DOMAINS))
        if unknown:
            raise ValueError(f"unknown domain(s) {unknown} in max_chars; known: {', '.join(DEMO_DOMAINS)}")
        caps = {**DEFAULT_MAX_CHARS, **max_chars}
    else:
        caps = dict.fromkeys(DEMO_DOMAINS, max_chars)
    bad = {d: c for d, c in caps.items() if not isinstance(c, int) or c < 1000}
    if bad:
        raise ValueError(f"max_chars must be integers >= 1000 characters per domain; got {bad}")
    return caps


def _take(items: Iterator[tuple[str, str]], cap: int, max_doc_chars: int) -> tuple[list[str], list[str]]:
    """Split each (source, text) into documents and keep them until ``cap`` characters; return (docs, sources)."""
    docs, used, total = [], [], 0
    for source, text in items:
        text = text.strip()
        if not text:
            continue
        used.append(source)
        for doc in _split(text, max_doc_chars):
            if total + len(doc) > cap:
                room = cap - total
                cut = doc.rfind("\n", 0, room)
                tail = doc[: cut if cut > 0 else room]
                if room >= 200 and tail.strip():  # a tail cut at a line break is still a useful document
                    docs.append(tail)
                return docs, used
            docs.append(doc)
            total += len(doc)
    return docs, used


def _split(text: str, limit: int) -> list[str]:
    """Cut ``text`` into pieces of at most ``limit`` characters, preferring blank lines, then line breaks."""
    out, rest = [], text
    while len(rest) > limit:
        cut = rest.rfind("\n\n", 0, limit)
        if cut < limit // 2:
            cut = rest.rfind("\n", 0, limit)
        if cut < limit // 2:
            cut = limit
        out.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip("\n")  # keep the indentation of a piece's first line (code)
    return [piece for piece in out + [rest] if piece.strip()]


def _stdlib_files() -> list[str]:
    """Sorted stdlib ``.py`` paths (relative), without tests, bundled packages or machine-specific files."""
    root = sysconfig.get_paths()["stdlib"]
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("config-"))
        found += [
            os.path.relpath(os.path.join(folder, f), root)
            for f in files
            if f.endswith(".py") and not f.startswith("_sysconfigdata")
        ]
    return sorted(p.replace(os.sep, "/") for p in found)


def _read(path: str | Path) -> str:
    return Path(path).read_bytes().decode("utf-8", errors="replace").replace("\r\n", "\n")


def _code_sources(files: list[str]) -> Iterator[tuple[str, str]]:
    root = sysconfig.get_paths()["stdlib"]
    for rel in files:
        yield rel, _read(os.path.join(root, rel))


def _docs_sources(files: list[str], seed: int) -> Iterator[tuple[str, str]]:
    """pydoc topics and per-module API text, interleaved in a seeded order (module texts built lazily)."""
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distro Pythons split pydoc_data off; module docstrings still make the domain
        topics = {}
    keys = [f"pydoc_data.topics:{k}" for k in sorted(topics)] + [f"stdlib:{f}" for f in files]
    random.Random(f"regmix-demo:{seed}:docs").shuffle(keys)
    root = sysconfig.get_paths()["stdlib"]
    for key in keys:
        kind, _, name = key.partition(":")
        yield key, topics[name] if kind == "pydoc_data.topics" else _api_text(os.path.join(root, name), name)


def _api_text(path: str, rel: str) -> str:
    """pydoc-like text of one module: its docstring, then each documented class/function with its signature."""
    try:
        tree = ast.parse(_read(path))
    except SyntaxError:
        return ""
    module = rel[:-3].replace("/", ".").removesuffix(".__init__")
    parts = [f"Help on module {module}:", ast.get_docstring(tree) or ""]
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            doc = ast.get_docstring(node)
            if doc:
                head = node.name if isinstance(node, ast.ClassDef) else f"{node.name}({ast.unparse(node.args)})"
                parts.append(head + "\n" + "\n".join("    " + line for line in doc.splitlines()))
    return "\n\n".join(parts) if len(parts) > 2 or parts[1] else ""


def _distributions() -> list[importlib.metadata.Distribution]:
    """Installed distributions of this environment's site-packages, one per name, sorted, this project left out.

    Only site-packages is scanned (not ``sys.path``), so the working directory cannot change the corpus.
    """
    paths = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    by_name = {}
    for dist in importlib.metadata.distributions(path=paths):
        try:
            name = normalize_domain(dist.metadata.get("Name") or "")
        except ValueError:  # a broken METADATA without a usable name: not a source of prose
            continue
        if name != "regmix_plugin" and name not in by_name:
            by_name[name] = dist
    return [by_name[n] for n in sorted(by_name)]


def _prose_sources(seed: int) -> Iterator[tuple[str, str]]:
    dists = _distributions()
    random.Random(f"regmix-demo:{seed}:prose").shuffle(dists)
    for dist in dists:
        meta = dist.metadata
        body = _clean_markup(meta.get_payload() or meta.get("Description") or "")
        summary = meta.get("Summary") or ""
        yield f"{meta['Name']}=={meta['Version']}", f"# {meta['Name']}\n\n{summary}\n\n{body}" if body else ""


_CODE_FENCE = re.compile(r"^\s*(```|~~~)")
_RULE = re.compile(r"^[\s=\-+~^`#*|:_.]*$")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_TAG = re.compile(r"<[^>]*>|&nbsp;")


def _clean_markup(text: str) -> str:
    """Keep the prose of a README: drop code blocks, directives, tables, badges, HTML and heading rules."""
    out: list[str] = []
    in_fence, skip_indented = False, False
    for line in text.replace("\r\n", "\n").split("\n"):
        if _CODE_FENCE.match(line):
            in_fence = not in_fence
            continue
        indented = line.startswith(("    ", "\t", "   ")) or not line.strip()
        if in_fence or (skip_indented and indented):
            continue
        skip_indented = False
        stripped = line.strip()
        if stripped.startswith(".. ") or stripped.endswith("::"):  # reST directive or literal block follows
            skip_indented = True
            if stripped.startswith(".. ") or stripped == "::":
                continue
            line = line.rstrip(":") + ":"
        markup = line.startswith(("    ", "\t")) or stripped.startswith((">>>", "|", "[![", "$ ")) or _RULE.match(line)
        if markup and stripped:
            continue
        line = _TAG.sub("", _LINK.sub(r"\1", line)).rstrip()
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()


def _license_sources(seed: int) -> Iterator[tuple[str, str]]:
    """Licence files of each distribution's metadata folder; identical texts (whitespace aside) kept once."""
    files = []
    for dist in _distributions():
        for f in dist.files or []:
            in_meta = any(p.endswith((".dist-info", ".egg-info")) for p in f.parts[:-1])
            if in_meta and _LICENSE_NAME.search(f.name) and not f.name.endswith((".py", ".pyc")):
                files.append((f"{dist.metadata['Name']}/{f}", f))
    files.sort(key=lambda x: x[0])
    random.Random(f"regmix-demo:{seed}:licenses").shuffle(files)
    seen = set()
    for name, f in files:
        path = Path(f.locate())
        if not path.is_file():
            continue
        text = _read(path)
        key = hashlib.sha256(" ".join(text.split()).encode()).hexdigest()
        if "\x00" not in text and key not in seen:
            seen.add(key)
            yield name, text


_NAMES = (
    "Ada",
    "Ben",
    "Chen",
    "Dana",
    "Eli",
    "Farah",
    "Gus",
    "Hana",
    "Ivan",
    "Jia",
    "Kofi",
    "Lena",
    "Maya",
    "Nils",
    "Omar",
    "Priya",
    "Rosa",
    "Sami",
    "Tomas",
    "Uma",
)
_ITEMS = ("apples", "marbles", "books", "pencils", "stamps", "cookies", "shells", "cards", "stickers", "eggs")


def _problem(rng: random.Random) -> str:
    """One word problem with its worked solution; eight templates of one- and two-step arithmetic."""
    a, b = rng.sample(_NAMES, 2)
    item, kind, r = rng.choice(_ITEMS), rng.randrange(8), rng.randint
    if kind == 0:
        x, y = r(5, 90), r(2, 40)
        z = r(1, x + y)
        return (
            f"{a} has {x} {item}. {a} buys {y} more and gives {z} to {b}. How many {item} does {a} have now?\n"
            f"Solution: {x} + {y} = {x + y}. {x + y} - {z} = {x + y - z}.\nAnswer: {x + y - z}"
        )
    if kind in (1, 4):  # one multiplication, two stories
        x, y = (r(3, 24), r(2, 15)) if kind == 1 else (r(20, 120), r(2, 8))
        question, unit = (
            (f"A box holds {x} {item}. {a} fills {y} boxes. How many {item} are in the boxes?", "")
            if kind == 1
            else (f"A train travels at {x} km per hour for {y} hours. How far does it go?", " km")
        )
        return f"{question}\nSolution: {x} x {y} = {x * y}.\nAnswer: {x * y}{unit}"
    if kind == 2:
        k, n = r(2, 9), r(10, 120)
        q, m = divmod(n, k)
        return (
            f"{a} shares {n} {item} equally among {k} friends. How many does each friend get, and how many are "
            f"left over?\nSolution: {n} / {k} = {q} remainder {m}.\nAnswer: {q} each, {m} left over"
        )
    if kind == 3:
        p, q = r(2, 30), r(2, 9)
        paid = -(-p * q // 20) * 20 + rng.choice((0, 20, 50))
        return (
            f"A notebook costs {p} dollars. {a} buys {q} of them and pays with {paid} dollars. How much change "
            f"does {a} get?\nSolution: {p} x {q} = {p * q}. {paid} - {p * q} = {paid - p * q}.\n"
            f"Answer: {paid - p * q} dollars"
        )
    if kind == 5:
        p, d = r(1, 20) * 20, rng.choice((10, 20, 25, 50))
        off = p * d // 100
        return (
            f"A jacket costs {p} dollars and is on sale for {d}% off. What is the sale price?\n"
            f"Solution: {d}% of {p} is {off}. {p} - {off} = {p - off}.\nAnswer: {p - off} dollars"
        )
    if kind == 6:
        x, k, y = r(3, 15), r(2, 5), r(1, 20)
        return (
            f"{a} is {x} years old. {b} is {k} times as old as {a}. How old will {b} be in {y} years?\n"
            f"Solution: {x} x {k} = {x * k}. {x * k} + {y} = {x * k + y}.\nAnswer: {x * k + y}"
        )
    w, h = r(2, 40), r(2, 40)
    return (
        f"A garden is {w} m wide and {h} m long. What are its area and its perimeter?\n"
        f"Solution: area = {w} x {h} = {w * h}. perimeter = 2 x ({w} + {h}) = {2 * (w + h)}.\n"
        f"Answer: {w * h} square metres and {2 * (w + h)} m"
    )


def _math_sources(seed: int) -> Iterator[tuple[str, str]]:
    """Endless seeded worksheets of 3-10 problems each; ``_take`` stops at the cap."""
    rng = random.Random(f"regmix-demo:{seed}:math")
    sheet = 0
    while True:
        problems = [f"Problem {i + 1}. {_problem(rng)}" for i in range(rng.randint(3, 10))]
        yield f"worksheet-{sheet:05d}", "\n\n".join(problems)
        sheet += 1
