"""reStructuredText and Markdown -> plain-text paragraphs (pure functions of strings; ``tune_p7.data.chunking`` packs
them into chunks).

``paragraphs(text, kind)`` (``kind``: 'rst', 'md' or 'txt') gives the document's paragraphs in order, headings
flagged. reST: section underlines/overlines and transitions, comments and link targets (``.. _x:``),
substitution definitions, metadata directives (``.. index::``, ``.. module::``, ``.. toctree::`` ...) are
dropped; directive markers of prose directives (``.. note::``, ``.. versionadded::``, ``.. seealso::`` ...) are
dropped but their body is kept; object directives (``.. function:: f(a, b)``) keep only the object's name;
roles (``:func:`~os.path.join``` -> ``os.path.join``, ``:ref:`text <target>``` -> ``text``), inline literals,
emphasis, hyperlinks and footnote references become their text. Markdown: headers, emphasis, inline code, links
and images (-> their text), HTML tags, block quotes, list markers, tables and rules.

**Code is dropped**: reST literal blocks (after ``::``), code/doctest directives, ``>>>`` doctest blocks,
Markdown fenced and indented code. The chunks are the prose a sentence model was trained on; code embeds poorly
with it and would dominate the token budget (256 word pieces for all-MiniLM-L6-v2).
"""
from __future__ import annotations

import re
from dataclasses import dataclass


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
