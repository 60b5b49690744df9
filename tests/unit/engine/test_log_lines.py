"""LineAssembler: bytes from a pipe to complete lines, as a terminal would show them."""

from __future__ import annotations

import pytest

from notebook_agent.engine.log_lines import CUT_MARKER, LineAssembler, cut_text


def test_plain_lines_and_partial() -> None:
    la = LineAssembler()
    assert la.feed(b"one\ntwo\nthr") == ["one", "two"]
    assert la.feed(b"ee\n\nfo") == ["three", ""]
    assert la.flush() == ["fo"]
    assert la.flush() == []


def test_crlf_is_a_newline() -> None:
    la = LineAssembler()
    assert la.feed(b"a\r\nb\r\n") == ["a", "b"]
    assert la.feed(b"abc\r\n") == ["abc"]


def test_carriage_return_overwrites() -> None:
    la = LineAssembler()
    assert la.feed(b"10%\r20%\r30%\n") == ["30%"]
    assert la.feed(b"x\r\r\n") == ["x"]
    assert la.feed(b"50%\r60%\r\n") == ["60%"]


def test_cr_at_feed_end_then_lf() -> None:
    la = LineAssembler()
    assert la.feed(b"abc\r") == []
    assert la.feed(b"\ndef\n") == ["abc", "def"]
    assert la.feed(b"10%\r") == []
    assert la.feed(b"20%") == []
    assert la.feed(b"\n") == ["20%"]


def test_partial_progress_bar_keeps_only_the_latest() -> None:
    la = LineAssembler(max_line_chars=100)
    for i in range(10_000):
        la.feed(f"{i}%\r".encode())
    assert len(la._partial) <= 101
    assert la.flush() == ["9999%"]


def test_multibyte_split_across_feeds() -> None:
    la = LineAssembler()
    data = "héllo €uro 😀\n".encode()
    out: list[str] = []
    for i in range(len(data)):
        out += la.feed(data[i : i + 1])
    assert out == ["héllo €uro 😀"]


def test_invalid_bytes_are_replaced() -> None:
    la = LineAssembler()
    assert la.feed(b"a\xffb\n") == ["a\ufffdb"]
    assert la.feed(b"\xe2\x82") == []
    assert la.flush() == ["\ufffd"]


def test_long_line_is_cut_with_marker() -> None:
    limit = 64 * 1024
    original = "".join(chr(ord("a") + i % 26) for i in range(200_000))
    la = LineAssembler(max_line_chars=limit)
    data = (original + "\nnext\n").encode()
    out: list[str] = []
    for i in range(0, len(data), 5000):  # arrives in small chunks: cut while it grows
        out += la.feed(data[i : i + 5000])
        assert len(la._partial) <= limit + 1
    assert out[-1] == "next"
    pieces = out[:-1]
    assert len(pieces) == 4
    assert all(len(p) <= limit for p in pieces)
    assert all(p.endswith(CUT_MARKER) for p in pieces[:-1])
    assert not pieces[-1].endswith(CUT_MARKER)
    assert "".join(p.removesuffix(CUT_MARKER) for p in pieces) == original
    # the same pieces whether the line arrives at once or in chunks
    assert LineAssembler(limit).feed(original.encode() + b"\n") == pieces
    assert cut_text(original, limit) == pieces


def test_long_partial_line_flushed() -> None:
    la = LineAssembler(max_line_chars=50)
    out = la.feed(b"x" * 120)
    assert out and all(p.endswith(CUT_MARKER) for p in out)
    rest = la.flush()
    assert len(rest) == 1
    assert "".join(p.removesuffix(CUT_MARKER) for p in out + rest) == "x" * 120


def test_limit_must_exceed_marker() -> None:
    with pytest.raises(ValueError):
        LineAssembler(max_line_chars=len(CUT_MARKER))
