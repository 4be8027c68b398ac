"""Long texts cut for the per-input limit: every piece fits, the pieces join back to the text."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lakeloom.engine.tokens import count_texts, token_windows

MODEL = "text-embedding-3-small"


@pytest.mark.parametrize(
    "text",
    [
        "plain words about a cracked mug " * 40,
        "茶杯裂了,茶漏了。" * 60,  # CJK: characters of several bytes, tokens inside them
        "🍵🫖☕ tea! " * 80,  # emoji: 4-byte characters split across tokens
        "שלום עולם مرحبا " * 50,  # right-to-left scripts
    ],
)
def test_pieces_fit_and_join_back(text):
    pieces = token_windows(text, MODEL, 16)
    assert len(pieces) > 1 and "".join(pieces) == text
    assert all(n <= 16 for n in count_texts(pieces, MODEL))
    assert "\ufffd" not in "".join(pieces)


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=400), st.integers(min_value=1, max_value=40))
def test_any_text_any_limit(text, limit):
    pieces = token_windows(text, MODEL, limit)
    assert "".join(pieces) == text
    for piece, n in zip(pieces, count_texts(pieces, MODEL), strict=True):
        assert n <= limit or len(piece) == 1  # only a single character can need more
