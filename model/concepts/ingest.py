"""Readers: files and strings -> documents -> sentences.

Formats (chosen by the file's suffix):

- ``.txt .text .rst`` plain text and ``.md .markdown`` Markdown: one file is one document. Markdown
  is parsed (markdown-it-py): link text kept (the address where a link has none), code blocks, HTML
  and tables dropped, headings and list items are paragraphs of their own.
- a folder: its supported files, in sorted order (``expand_paths``; subfolders are not entered).
- ``.jsonl``: one document per line, its text in ``text_field`` (default ``"text"``).
- ``.csv``: one document per row, its text in ``text_column`` (default ``"text"``).
- ``.tsv``: (head, relation, tail) triples, one per line, for graph chains (see ``sequences.py``).

Sentences come from pySBD (rule-based, offline). Very long sentences are cut at a clause or word
break so that no piece is longer than ``split_chars`` (200, the cap the Large Concept Model work
used). Every reader validates the whole file before anything is stored, and raises ``IngestError``
(a ``ValueError``) naming the file and the place: empty or binary files, invalid UTF-8 (byte
offset and line), lines longer than ``MAX_LINE_CHARS``, bad JSON, a missing field or column.
"""
from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pysbd

TEXT_SUFFIXES = {".txt", ".text", ".rst"}
MARKDOWN_SUFFIXES = {".md", ".markdown"}
TRIPLE_SUFFIXES = {".tsv"}
SUFFIXES = TEXT_SUFFIXES | MARKDOWN_SUFFIXES | TRIPLE_SUFFIXES | {".jsonl", ".csv"}
MAX_LINE_CHARS = 1_000_000  # a longer "line" is minified data or a dump, not prose
SPLIT_CHARS = 200


class IngestError(ValueError):
    """Input that cannot become sentences; the message names the file and where."""


@dataclass
class RawDocument:
    name: str
    source: str
    sentences: list[str] = field(default_factory=list)


# --- sentence splitting -------------------------------------------------------------------------

_segmenter = None


_WINDOW = 2000
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s+(?=[A-Z\"'(\[])")


def _windows(paragraph: str, size: int = _WINDOW) -> list[str]:
    """Cut a long paragraph at likely sentence ends into pieces of about ``size`` characters:
    pySBD's time grows faster than linearly with the length of its input (800 sentences in one
    paragraph take seconds), so it only ever sees short windows."""
    out, start = [], 0
    while len(paragraph) - start > size:
        ends = [m.end() for m in _SENTENCE_END.finditer(paragraph, start + size // 2, start + size)]
        cut = ends[-1] if ends else start + size
        out.append(paragraph[start:cut])
        start = cut
    out.append(paragraph[start:])
    return out


def _segment(paragraph: str) -> list[str]:
    global _segmenter
    if _segmenter is None:
        _segmenter = pysbd.Segmenter(language="en", clean=False)
    return [s.strip() for w in _windows(paragraph) for s in _segmenter.segment(w) if s.strip()]


def cap_length(sentence: str, split_chars: int = SPLIT_CHARS) -> list[str]:
    """Cut a sentence into pieces of at most ``split_chars``, preferring ``;`` ``:`` ``,`` then spaces."""
    pieces = []
    s = sentence.strip()
    while len(s) > split_chars:
        cut = split_chars
        for brk in ("; ", ": ", ", ", " - ", " "):
            i = s.rfind(brk, split_chars // 3, split_chars)
            if i > 0:
                cut = i + len(brk.rstrip())  # keep the punctuation with the left piece
                break
        pieces.append(s[:cut].strip())
        s = s[cut:].strip()
    if s:
        pieces.append(s)
    return pieces


_UNDERLINE = re.compile(r"^\s*([=\-*~^#+_`'\"])\1{2,}\s*$")  # reST/setext heading rules
_ITEM = re.compile(r"^\s*([-*+•]|\[\d+\])\s+")  # list bullets and footnote marks start a paragraph


def _paragraphs(text: str) -> list[str]:
    """Blank-line separated blocks, each joined into one line; heading underlines and bullets dropped."""
    blocks, current = [], []
    for line in text.splitlines():
        item = _ITEM.match(line)
        if (not line.strip() or item) and current:
            blocks.append(" ".join(current))
            current = []
        if item:
            line = line[item.end():]
        if line.strip() and not _UNDERLINE.match(line):
            current.append(line.strip())
    if current:
        blocks.append(" ".join(current))
    return blocks


_markdown_parser = None


def _markdown() -> "markdown_it.MarkdownIt":
    global _markdown_parser
    if _markdown_parser is None:
        from markdown_it import MarkdownIt  # CommonMark, as GitHub and most renderers read it

        _markdown_parser = MarkdownIt("commonmark", {"html": True}).enable("table")
    return _markdown_parser


def _inline_text(children) -> str:
    """An inline token's text: link text (the URL where a link has none: autolinks, e-mail addresses),
    image alt text, inline code's content; inline HTML dropped, line breaks become spaces."""
    out: list[str] = []
    link_stack: list[tuple[str, int]] = []  # (href, len(out) at the link's start)
    for tok in children or ():
        if tok.type in ("text", "code_inline"):
            out.append(tok.content)
        elif tok.type in ("softbreak", "hardbreak"):
            out.append(" ")
        elif tok.type == "image":
            out.append(_inline_text(tok.children) or tok.content)
        elif tok.type == "link_open":
            link_stack.append((str(tok.attrs.get("href", "")), len(out)))
        elif tok.type == "link_close" and link_stack:
            href, start = link_stack.pop()
            if not "".join(out[start:]).strip():
                out.append(href.removeprefix("mailto:"))
        # html_inline, emphasis markers (em/strong open/close): no text of their own
    return "".join(out)


def markdown_paragraphs(text: str) -> list[str]:
    """Markdown -> its prose blocks, each one line: paragraphs, headings, list items and quotes (each a
    block of its own). Code blocks (fenced or indented), HTML blocks and tables are dropped: they are not
    sentences. Parsed by markdown-it-py (CommonMark), not by patterns."""
    blocks, in_table = [], 0
    for tok in _markdown().parse(text):
        if tok.type == "table_open":
            in_table += 1
        elif tok.type == "table_close":
            in_table -= 1
        elif tok.type == "inline" and not in_table:
            para = " ".join(_inline_text(tok.children).split())
            if para:
                blocks.append(para)
        # fence, code_block, html_block, hr: dropped
    return blocks


def split_sentences(text: str, markdown: bool = False, split_chars: int = SPLIT_CHARS) -> list[str]:
    """A document's text -> its sentences, in order."""
    out = []
    for para in (markdown_paragraphs(text) if markdown else _paragraphs(text)):
        for sentence in _segment(para):
            out.extend(cap_length(sentence, split_chars))
    return out


# --- reading files ------------------------------------------------------------------------------

def read_text(path: Path) -> str:
    """A file's text, or an ``IngestError`` saying exactly what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    data = path.read_bytes()
    if not data.strip():
        raise IngestError(f"{path}: file is empty")
    nul = data.find(b"\x00", 0, 65536)
    if nul >= 0:
        raise IngestError(f"{path}: binary file (NUL byte at offset {nul}), not text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise IngestError(f"{path}: invalid UTF-8 at byte offset {e.start} (line {line}, column {col}): "
                          f"{e.reason}") from None
    for lineno, line in enumerate(io.StringIO(text), 1):
        if len(line) > MAX_LINE_CHARS:
            raise IngestError(f"{path}: line {lineno} is {len(line):,} characters long "
                              f"(limit {MAX_LINE_CHARS:,}); not prose")
    return text


def _doc_name(record: dict, fallback: str) -> str:
    for key in ("id", "title", "name", "doc", "doc_id"):
        if record.get(key) not in (None, ""):
            return str(record[key])
    return fallback


def read_jsonl(path: Path, text_field: str = "text") -> list[RawDocument]:
    docs = []
    for lineno, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise IngestError(f"{path}: line {lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
            raise IngestError(f"{path}: line {lineno}: no string field {text_field!r} "
                              f"(fields: {sorted(record) if isinstance(record, dict) else type(record).__name__})")
        docs.append(RawDocument(_doc_name(record, f"{Path(path).name}:{lineno}"), str(path),
                                split_sentences(record[text_field])))
    return docs


def read_csv(path: Path, text_column: str = "text") -> list[RawDocument]:
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    if not reader.fieldnames or text_column not in reader.fieldnames:
        raise IngestError(f"{path}: no column {text_column!r} (columns: {reader.fieldnames or []})")
    docs = []
    for rowno, row in enumerate(reader, 2):  # row 1 is the header
        docs.append(RawDocument(_doc_name(row, f"{Path(path).name}:{rowno}"), str(path),
                                split_sentences(row[text_column] or "")))
    return docs


def read_triples(path: Path) -> list[tuple[str, str, str]]:
    """(head, relation, tail) per tab-separated line; ``#`` comments and blank lines skipped."""
    triples = []
    for lineno, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [p.strip() for p in line.split("\t")]
        if len(parts) != 3 or not all(parts):
            raise IngestError(f"{path}: line {lineno}: expected 3 tab-separated fields "
                              f"(head, relation, tail), got {len(parts)}")
        triples.append((parts[0], parts[1], parts[2]))
    if not triples:
        raise IngestError(f"{path}: no triples")
    return triples


def expand_paths(paths) -> list[Path]:
    """The files to read: a file as given, a folder as its supported files (not hidden, sorted; subfolders
    not entered). A path that does not exist, or a folder with no supported file, is an ``IngestError``."""
    out = []
    for p in map(Path, [paths] if isinstance(paths, (str, Path)) else paths):
        if p.is_dir():
            files = sorted(f for f in p.iterdir()
                           if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in SUFFIXES)
            if not files:
                raise IngestError(f"{p}: a folder with no files of a supported type (supported: {sorted(SUFFIXES)}; "
                                  f"subfolders are not read)")
            out += files
        elif not p.exists():
            raise IngestError(f"{p}: no such file or folder")
        else:
            out.append(p)
    return out


def read_documents(path: Path, text_field: str = "text", text_column: str = "text") -> list[RawDocument]:
    """A text, Markdown, JSONL or CSV file -> its documents (triple files go to ``read_triples``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES | MARKDOWN_SUFFIXES:
        return [RawDocument(path.stem, str(path), split_sentences(read_text(path), markdown=suffix in MARKDOWN_SUFFIXES))]
    if suffix == ".jsonl":
        return read_jsonl(path, text_field)
    if suffix == ".csv":
        return read_csv(path, text_column)
    raise IngestError(f"{path}: unsupported file type {suffix or '(none)'!r} (supported: {sorted(SUFFIXES)})")
