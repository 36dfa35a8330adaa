"""reST and Markdown markup stripped into plain paragraphs, code dropped, headings flagged."""
from __future__ import annotations

import re

from sample_docs import MD, RST, TXT
from tune_p7.data.markup import paragraphs


def text_of(paras) -> str:
    return "\n".join(p.text for p in paras)


def test_rst_markup_is_stripped_and_code_dropped():
    text = text_of(paragraphs(RST, "rst"))
    for bad in (":mod:", ":func:", ":ref:", ".. note::", ".. module::", ".. code-block::", ".. _queue", "====",
                "----", "``", "**", "this code must not appear", "serve(line", ":synopsis:", "versionadded"):
        assert bad not in text, bad
    assert "collections.deque.popleft" in text and "the guide" in text and "put and get" in text
    assert "then calls the next one:" in text  # '::' became ':' and the literal block is gone


def test_rst_keeps_every_paragraph_once_in_order_and_flags_section_titles():
    paras = paragraphs(RST, "rst")
    tokens = [int(t) for t in re.findall(r"rst(\d\d)", text_of(paras))]
    assert tokens == [1, 2, 3, 5, 6] and "at six in the morning" in text_of(paras)
    assert [p.text for p in paras if p.heading] == ["queueing --- Waiting lines", "Serving customers"]


def test_markdown_markup_is_stripped_and_code_dropped():
    paras = paragraphs(MD, "md")
    text = text_of(paras)
    assert "fenced code" not in text and "**" not in text and "](" not in text and "#" not in text
    assert "full sun" in text and "the guide for pruning advice" in text
    assert [p.text for p in paras if p.heading] == ["Gardening notes", "Soil"]


def test_plain_text_paragraphs_are_blank_line_separated_and_unchanged():
    paras = paragraphs(TXT, "txt")
    assert [re.match(r"Token (txt\d\d)\.", p.text).group(1) for p in paras] == ["txt01", "txt02", "txt03"]
    assert not any(p.heading for p in paras) and "\n" not in text_of(paras[:1])
