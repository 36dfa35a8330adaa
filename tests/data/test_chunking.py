"""Paragraphs packed into ordered chunks between min_chars and max_chars, nothing lost or repeated."""
from __future__ import annotations

import re

import pytest

from sample_docs import MD, RST
from tune_p7.data.chunking import chunk_document, pack
from tune_p7.data.markup import Para


def test_pack_bounds_and_order():
    paras = [Para("Heading", heading=True)] + [Para(f"Sentence number {i} of a long paragraph. " * 3)
                                               for i in range(20)]
    paras.append(Para(" ".join(f"Long{i} sentence goes on and on." for i in range(60))))
    chunks = pack(paras, max_chars=300, min_chars=100)
    assert all(100 <= len(c) <= 300 for c in chunks[:-1]) and len(chunks[-1]) <= 300
    joined = " ".join(chunks)
    nums = [int(n) for n in re.findall(r"number (\d+)", joined)]
    assert nums == sorted(nums) and set(nums) == set(range(20))
    assert chunks[0].startswith("Heading\n")  # a heading joins its first paragraph
    longs = [int(n) for n in re.findall(r"Long(\d+)", joined)]
    assert longs == list(range(60))  # the long paragraph was split at sentences, nothing lost


def test_a_heading_starts_a_new_chunk_once_the_current_one_is_long_enough():
    paras = [Para("First", heading=True), Para("a" * 150), Para("Second", heading=True), Para("b" * 150)]
    assert pack(paras, max_chars=800, min_chars=100) == ["First\n" + "a" * 150, "Second\n" + "b" * 150]


def test_a_short_last_piece_joins_the_chunk_before_or_is_dropped():
    assert pack([Para("a" * 150), Para("tail")], max_chars=200, min_chars=100) == ["a" * 150 + "\ntail"]
    assert pack([Para("a" * 150), Para("t" * 60)], max_chars=200, min_chars=100) == ["a" * 150]


def test_chunk_document_keeps_every_paragraph_once_in_order():
    chunks = chunk_document(RST, "rst", max_chars=400, min_chars=50)
    assert all(len(c) <= 400 for c in chunks)
    assert [int(t) for t in re.findall(r"rst(\d\d)", "\n".join(chunks))] == [1, 2, 3, 5, 6]
    assert "Token md03" in chunk_document(MD, "md", max_chars=400, min_chars=50)[-1]


def test_min_chars_above_max_chars_is_refused():
    with pytest.raises(ValueError, match="min_chars must not exceed max_chars"):
        pack([Para("text")], max_chars=100, min_chars=200)
