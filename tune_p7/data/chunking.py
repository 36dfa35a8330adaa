"""Documents -> ordered plain-text chunks (pure functions of strings: no I/O, no model).

``chunk_document(text, kind, max_chars, min_chars)``: the markup is stripped (``tune_p7.data.markup.paragraphs``:
reST, Markdown or plain text), then ``pack`` packs the paragraphs greedily into chunks of at most ``max_chars``
characters (paragraphs joined by a newline); a section heading starts a new chunk once the current one has
``min_chars``; a paragraph longer than ``max_chars`` is split at sentence ends (a sentence still too long at
spaces); a piece shorter than ``min_chars`` is merged with what follows (so a heading joins its first
paragraph) and a last one with the chunk before it when both fit, else it is dropped.
"""
from __future__ import annotations

import re
from collections import deque

from tune_p7.data.markup import Para, paragraphs

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
