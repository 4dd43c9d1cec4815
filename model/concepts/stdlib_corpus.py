"""A large offline corpus from text every CPython install has: the language reference and the
standard library's docstrings, document order kept.

    for doc in stdlib_documents():          # deterministic for a given Python version
        doc.name, doc.source, doc.text      # "stdlib:json.decoder", "...", paragraphs joined by blank lines

Two kinds of documents, in this order:

1. ``pydoc_data.topics``: the 79 topics of the language reference ("assignment", "if", ...), one
   document each, sorted by name (exactly what ``default_corpus()`` used to build).
2. The standard library's source files (``sysconfig.get_paths()['stdlib']``), sorted by path, parsed
   with ``ast`` (never imported, so no module runs its import side effects). One *unit* of text is a
   module: its docstring, then the docstrings of its public functions and classes in file order (a
   class's methods follow the class). A top-level public class whose own docstrings hold at least
   ``class_min_chars`` characters becomes a document of its own (``stdlib:module.Class``), so a large
   module such as ``argparse`` is several coherent documents instead of one very long one.

Docstrings are cleaned before they become text: doctest sessions (``>>>`` / ``...`` and their
output), literal and indented code blocks after ``::``, reST directives (``.. note::``), tables,
call signatures on a line of their own (``find(sub[, start[, end]]) -> int``), section underlines,
field-list markers (``:param x:``) and inline roles (``:func:`len``` -> ``len``) are removed. What
is left is prose that ``split_sentences`` and the curation checks (``model/concepts/checks.py``)
then judge like any other text.

``quick_documents(n)`` is a small, fixed subset (the first ``n`` documents of a few well-documented
modules) for tests.

Denylisted (never read): the test suites, IDLE, tkinter/turtle, lib2to3, ensurepip, site-packages,
generated codec tables (``encodings.*`` except the package itself), and the joke/side-effect
modules (antigravity, this, __hello__, __phello__, __main__).
"""
from __future__ import annotations

import ast
import io
import re
import tokenize
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

DENY_PREFIXES = ("test", "ensurepip", "site-packages", "dist-packages", "__phello__", "config-", "pydoc_data")
DENY_MODULES = {"antigravity", "this", "__hello__", "__main__", "_pydecimal"}
# _pydecimal repeats decimal's docstrings word for word; encodings.<codec> are generated tables
QUICK_MODULES = ("json", "textwrap", "argparse", "collections")
CLASS_MIN_CHARS = 600


@dataclass(frozen=True)
class CorpusDocument:
    name: str        # "topic:assignment", "stdlib:json.decoder", "stdlib:argparse.ArgumentParser"
    source: str      # where the text came from, for the store's source column
    text: str        # cleaned prose, paragraphs separated by blank lines


# --- docstring cleaning -------------------------------------------------------------------------

_ROLE = re.compile(r":[a-zA-Z]+(?::[a-zA-Z]+)?:`~?!?([^`<]*?)(?:\s*<[^>]*>)?`")   # :func:`len` -> len
_LITERAL = re.compile(r"``([^`]+)``")                                           # ``x`` -> x
_LINK = re.compile(r"`([^`<]+?)\s*<[^>]+>`_+")                                   # `text <url>`_ -> text
_REF = re.compile(r"`([^`]+)`_+")
_FIELD = re.compile(r"^:(param|parameter|arg|argument|key|keyword|type|raises?|returns?|rtype|var|ivar|cvar)"
                    r"(\s+[^:]+)?:\s*")
_SIGNATURE = re.compile(r"^[\w.]+\s*\(.*\)\s*(->.*)?$|^[\w.\[\], ]+\s*->\s*[\w.\[\], ()]+$")
_DIRECTIVE = re.compile(r"^\s*\.\.\s+[\w:-]+::.*$|^\s*\.\.\s+(_[^:]+:|\[[^\]]+\]|\|[^|]+\|).*$|^\s*\.\.\s*$")
_TABLE = re.compile(r"^\s*(\+[-=+]+\+|\|.*\||[=\-]{2,}(\s+[=\-]{2,})+)\s*$")
_PROMPT = re.compile(r"^\s*(>>>|\.\.\.)(\s|$)")
_UNDERLINE = re.compile(r"^\s*([=\-~^*#+_`'\"])\1{2,}\s*$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _after_block(lines: list[str], i: int, base: int) -> int:
    """The index of the first line after the indented block that follows line ``i`` (indent ``base``)."""
    i += 1
    while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
        i += 1
    return i


def clean_docstring(doc: str) -> str:
    """A docstring (already ``inspect.cleandoc``-ed) -> prose paragraphs separated by blank lines."""
    lines = doc.expandtabs().splitlines()
    out: list[str] = []
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        s = line.strip()
        if _PROMPT.match(line):  # a doctest session: prompts and their output, up to a blank line
            while i < n and lines[i].strip():
                i += 1
            out.append("")
            continue
        if _DIRECTIVE.match(line):  # directive and its indented body
            i = _after_block(lines, i, _indent(line))
            out.append("")
            continue
        if s.endswith("::"):  # "Example::" then an indented literal block
            kept = s[:-2].rstrip()
            if kept:
                out.append(line[:_indent(line)] + kept + ":")
            i = _after_block(lines, i, _indent(line))
            out.append("")
            continue
        if _TABLE.match(line) or _UNDERLINE.match(line) or (_SIGNATURE.match(s) and " " not in s.split("(")[0]):
            out.append("")
            i += 1
            continue
        out.append(line)
        i += 1
    # paragraphs: a line indented deeper than the paragraph's first line that looks like code ends it
    paras: list[str] = []
    cur: list[str] = []
    for line in out + [""]:
        s = line.strip()
        if not s:
            if cur:
                paras.append(" ".join(cur))
                cur = []
            continue
        s = _FIELD.sub("", s)
        cur.append(s)
    cleaned = []
    for p in paras:
        p = _LINK.sub(r"\1", p)
        p = _ROLE.sub(r"\1", p)
        p = _LITERAL.sub(r"\1", p)
        p = _REF.sub(r"\1", p)
        p = " ".join(p.split())
        if p:
            cleaned.append(p)
    return "\n\n".join(cleaned)


# --- walking the standard library ---------------------------------------------------------------

def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def module_name(rel: Path) -> str:
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _denied(name: str) -> bool:
    if not name or name in DENY_MODULES:
        return True
    if name.startswith("encodings.") or ".test" in name or ".tests" in name or "idle_test" in name:
        return True
    return any(name == p or name.startswith(p + ".") or (p.endswith("-") and name.startswith(p))
               or (p == "turtle" and name.startswith("turtle")) for p in DENY_PREFIXES)


def stdlib_files(root: Path | None = None) -> list[tuple[str, Path]]:
    """(module name, path) of every readable ``.py`` file of the standard library, sorted by module name."""
    root = Path(root) if root is not None else stdlib_root()
    found = {}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if any(not part.isidentifier() for part in rel.with_suffix("").parts):
            continue  # "site-packages", "config-3.11-x86_64-linux-gnu", "lib-dynload"...
        name = module_name(rel)
        if not _denied(name):
            found[name] = path
    return sorted(found.items())


def _doc(node) -> str:
    d = ast.get_docstring(node, clean=True)
    return clean_docstring(d) if d else ""


def _comment_blocks(data: bytes) -> list[tuple[int, str]]:
    """(first line, text) of each block of consecutive whole-line ``#`` comments, in file order.
    Trailing comments after code are skipped (fragments), as are shebang and coding lines."""
    blocks, cur, first, last = [], [], 0, -5
    try:
        tokens = list(tokenize.tokenize(io.BytesIO(data).readline))
    except (tokenize.TokenError, SyntaxError, UnicodeDecodeError):
        return []
    for tok in tokens:
        if tok.type != tokenize.COMMENT or not tok.line.lstrip().startswith("#"):
            continue
        text = tok.string.lstrip("#").strip()
        line = tok.start[0]
        if line != last + 1 or not text:
            if cur:
                blocks.append((first, " ".join(cur)))
            cur, first = [], line
        if text and not text.startswith("!") and "-*-" not in text and not _UNDERLINE.match(text):
            if not cur:
                first = line
            cur.append(text)
        last = line
    if cur:
        blocks.append((first, " ".join(cur)))
    return blocks


def _docstring_items(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, cleaned docstring) of the module and of every class and function, nested ones included."""
    items = []
    d = _doc(tree)
    if d:
        items.append((0, d))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            d = _doc(node)
            if d:
                items.append((node.lineno, d))
    return items


def module_documents(name: str, path: Path, class_min_chars: int = CLASS_MIN_CHARS, version: str = "",
                     comments: bool = True) -> list[CorpusDocument]:
    """The documents of one source file, its text in file order: docstrings (module, classes,
    functions, methods) and, with ``comments``, whole-line comment blocks. A top-level class whose
    text reaches ``class_min_chars`` is a document of its own. Empty when nothing usable or the file
    does not parse."""
    try:
        data = path.read_bytes()
        tree = ast.parse(data, filename=str(path))
    except (SyntaxError, ValueError, UnicodeDecodeError, OSError):
        return []
    source = f"stdlib source (Python {version})" if version else "stdlib source"
    items = _docstring_items(tree) + (_comment_blocks(data) if comments else [])
    items = [(line, text) for line, text in items if text]
    items.sort(key=lambda it: it[0])  # stable: a docstring before a comment on the same line
    spans = [(node.lineno, node.end_lineno or node.lineno, node.name) for node in tree.body
             if isinstance(node, ast.ClassDef)]
    parts: dict[str, list[str]] = {"": []}
    for line, text in items:
        owner = next((cls for lo, hi, cls in spans if lo <= line <= hi), "")
        parts.setdefault(owner, []).append(text)
    module_parts = []
    classes = []
    own = {cls: texts for cls, texts in parts.items() if cls}
    for line, text in items:  # module text in order, with the small classes' text where they stand
        owner = next((cls for lo, hi, cls in spans if lo <= line <= hi), "")
        if not owner or sum(map(len, own[owner])) < class_min_chars:
            module_parts.append(text)
    for _lo, _hi, cls in spans:
        if cls in own and sum(map(len, own[cls])) >= class_min_chars:
            classes.append(CorpusDocument(f"stdlib:{name}.{cls}", source, "\n\n".join(own[cls])))
    docs = [CorpusDocument(f"stdlib:{name}", source, "\n\n".join(module_parts))] if module_parts else []
    return docs + classes


def topic_documents() -> list[CorpusDocument]:
    """The language reference (``pydoc_data.topics``), one document per topic, sorted by name."""
    import platform

    from pydoc_data.topics import topics

    source = f"pydoc_data.topics (Python {platform.python_version()})"
    return [CorpusDocument(f"topic:{n}", source, topics[n]) for n in sorted(topics)]


def stdlib_documents(root: Path | None = None, topics: bool = True, class_min_chars: int = CLASS_MIN_CHARS,
                     comments: bool = True) -> Iterator[CorpusDocument]:
    """Every document of the corpus, in a fixed order: the topics, then the stdlib modules by name."""
    import platform

    if topics:
        yield from topic_documents()
    version = platform.python_version()
    for name, path in stdlib_files(root):
        yield from module_documents(name, path, class_min_chars, version, comments)


def quick_documents(n: int = 12, modules: tuple[str, ...] = QUICK_MODULES, root: Path | None = None
                    ) -> list[CorpusDocument]:
    """A small fixed subset for tests: the first ``n`` documents of a few well-documented modules
    (only their files are parsed, so this takes well under a second)."""
    import platform

    wanted = set(modules)
    out: list[CorpusDocument] = []
    for name, path in stdlib_files(root):
        if name.split(".")[0] in wanted:
            out += module_documents(name, path, version=platform.python_version())
            if len(out) >= n:
                break
    return out[:n]


def corpus_texts(documents=None) -> tuple[list[str], list[str], list[str]]:
    """(names, texts, sources) for ``ConceptStore.add_texts`` (group by source or pass one source)."""
    docs = list(stdlib_documents() if documents is None else documents)
    return [d.name for d in docs], [d.text for d in docs], [d.source for d in docs]
