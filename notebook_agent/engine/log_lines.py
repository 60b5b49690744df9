"""Bytes read from a task's pipe, turned into complete text lines the way a terminal would show them.

Decoding is incremental UTF-8 with replacement, so a character split across two reads decodes right. A bare
carriage return means the terminal overwrote the line (tqdm progress bars): only the text after the last one is
kept, while `\\r\\n` (also split across two reads) is a plain newline. A line longer than the limit is cut into
pieces, each piece but the last ending with CUT_MARKER, so a consumer never holds part of a line unknowingly.
"""

from __future__ import annotations

import codecs

CUT_MARKER = " [line cut: continues]"


def cut_text(text: str, limit: int, marker: str = CUT_MARKER) -> list[str]:
    """`text` in pieces of at most `limit` characters; every piece but the last ends with `marker`."""
    if len(text) <= limit:
        return [text]
    step = limit - len(marker)
    pieces = []
    while len(text) > limit:
        pieces.append(text[:step] + marker)
        text = text[step:]
    pieces.append(text)
    return pieces


def _overwrite(text: str) -> str:
    """What a terminal shows for one line: trailing carriage returns are part of a newline, and any other
    carriage return moved the cursor back to the start of the line, so only the text after the last counts."""
    text = text.rstrip("\r")
    cr = text.rfind("\r")
    return text if cr < 0 else text[cr + 1 :]


class LineAssembler:
    """Feeds of raw bytes in, complete lines (without their newline) out. Not thread-safe: one per pipe.

    Between feeds it holds at most one partial line of at most `max_line_chars` characters (plus one pending
    carriage return); longer text is cut and handed out as soon as it arrives. Text of a cut line that a later
    carriage return would have overwritten has already been handed out and stays.
    """

    def __init__(self, max_line_chars: int = 64 * 1024) -> None:
        if max_line_chars <= len(CUT_MARKER):
            raise ValueError(f"max_line_chars must be more than {len(CUT_MARKER)}")
        self.max_line_chars = max_line_chars
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""

    def feed(self, data: bytes) -> list[str]:
        """The lines completed by `data` (and pieces of an over-long line)."""
        return self._take(self._decoder.decode(data))

    def flush(self) -> list[str]:
        """At end of input: the last partial line, if it holds any text."""
        lines = self._take(self._decoder.decode(b"", final=True))
        last, self._partial = _overwrite(self._partial), ""
        if last:
            lines.extend(cut_text(last, self.max_line_chars))
        return lines

    def _take(self, text: str) -> list[str]:
        if not text:
            return []
        if "\r" not in text and "\r" not in self._partial:
            return self._take_plain(text)
        segments = text.split("\n")
        lines: list[str] = []
        for segment in segments[:-1]:
            line, self._partial = _overwrite(self._partial + segment), ""
            lines.extend(cut_text(line, self.max_line_chars))
        partial = self._partial + segments[-1]
        if "\r" in partial:
            # Keep one trailing carriage return: it may be the first half of a \r\n that the next feed ends.
            body = partial.rstrip("\r")
            trailing = "\r" if len(body) < len(partial) else ""
            cr = body.rfind("\r")
            partial = (body if cr < 0 else body[cr + 1 :]) + trailing
        body = partial.rstrip("\r")
        if len(body) > self.max_line_chars:
            pieces = cut_text(body, self.max_line_chars)
            lines.extend(pieces[:-1])
            partial = pieces[-1] + partial[len(body) :]
        self._partial = partial
        return lines

    def _take_plain(self, text: str) -> list[str]:
        """`_take` for text without carriage returns (nor one pending): no line to overwrite, so the lines are the
        split itself, cut only where one is over the limit. A chunk of a flood of output costs a few C calls."""
        limit = self.max_line_chars
        lines = text.split("\n")
        lines[0] = self._partial + lines[0]
        partial = lines.pop()
        if lines and max(map(len, lines)) > limit:
            lines = [piece for line in lines for piece in cut_text(line, limit)]
        if len(partial) > limit:
            pieces = cut_text(partial, limit)
            lines.extend(pieces[:-1])
            partial = pieces[-1]
        self._partial = partial
        return lines
