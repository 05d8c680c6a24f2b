"""The detector (pure): where in an answer's text a tool-call markup starts, whether it is one, and what stays text.

One :class:`Scanner` serves both paths: :func:`rescue_text` feeds it a whole answer; the streaming stage feeds it
content deltas and releases what it answers at once. Text passes untouched until a possible opener (a cheap check for
``<``, ``[`` and a backtick); from there it is held until the markup parser for that opener (one module per family)
says it is a complete call or proves it is not one. What counts:

* only calls naming a tool the request offered;
* not inside a fenced code block, inline code, or ``<think>`` reasoning, nor right after a quote mark;
* not followed, on the same line, by more prose (``… </tool_call> is the format``): after a call comes a line end,
  the end of the answer, or another token or markup;
* a whole fenced block (```` ```json ````, ```` ```xml ````, ```` ``` ````) counts only when it holds nothing but calls
  and ends the answer;
* bare JSON (``{"name": …, "parameters": …}``) and pythonic (``[name(…)]``) calls only at the start of the answer or
  right after another call.

Holding is bounded: a possible markup longer than ``max_hold`` characters is released as text, and at the end of the
answer everything undecided is decided (an unclosed false start is released unchanged). Held text longer than 4 KiB
is judged again only each time it grew by a quarter, so a long call costs linear time, not quadratic. Whitespace
between calls and after the last one is dropped; an answer with no call comes out exactly as it went in.
"""

from __future__ import annotations

import re
from typing import Any

from llamashim.stream.rescue import (
    command_r,
    deepseek,
    glm,
    granite,
    harmony,
    hermes,
    kimi,
    llama,
    minimax,
    mistral,
    qwen_xml,
)
from llamashim.stream.rescue.base import MORE, NO, Found, Miss, Offered, Parser, ToolCall, json_calls, prefix_of, ws

FAMILIES = (hermes, qwen_xml, glm, mistral, llama, deepseek, harmony, kimi, granite, command_r, minimax)
MAX_HOLD = 256 * 1024  # characters held back at most while a possible markup is undecided

_TABLE: dict[str, list[tuple[str, Parser]]] = {}
for _family in FAMILIES:
    for _opener in _family.OPENERS:
        _TABLE.setdefault(_opener[0], []).append((_opener, _family.parse))

THINK, UNTHINK, FENCE = "<think>", "</think>", "```"
_FENCE_LANGS = frozenset({"", "json", "xml", "tool_call", "tool_calls", "tool_code"})
_FENCE_HEAD = re.compile(r"([A-Za-z_\-]*)[ \t]*\r?\n")
_FENCE_MAYBE = re.compile(r"[A-Za-z_\-]*[ \t]*\r?\Z")
_QUOTES = "\"'“‘«"
_AFTER_OK = "\r\n<[{`;"
_LINE_KEPT = 200
_REJUDGE_ALWAYS = 4096  # held text up to this long is judged on every piece; longer, each time it grew by a quarter


class Scanner:
    """The incremental detector for one answer (one choice): :meth:`feed` text, then :meth:`finish`; each returns
    the text to pass on now and the calls completed."""

    def __init__(self, offered: Offered, max_hold: int = MAX_HOLD) -> None:
        self.offered = offered
        self.max_hold = max_hold
        self.found = False  # a call was rescued
        self._held = ""  # undecided text, from a possible opener on
        self._boundary = True  # the start of the answer, or right after a call
        self._ws = ""  # whitespace held at a boundary
        self._line = ""  # the tail of the current line of released text
        self._ticks = 0  # backticks on the current line (odd: inside inline code)
        self._fence = False  # inside a fenced code block
        self._think = False  # inside <think> reasoning
        self._judged = 0  # how long the held text was when last judged undecided

    def plain(self, piece: str) -> bool:
        """The fast path: ``piece`` cannot start a markup, and nothing is held; it is text (and noted as released)."""
        if self._held or self._boundary or "<" in piece or "[" in piece or "`" in piece:
            return False
        nl = piece.rfind("\n")
        if nl >= 0:
            self._line, self._ticks = piece[nl + 1:][-_LINE_KEPT:], 0
        else:
            self._line = (self._line + piece)[-_LINE_KEPT:]
        return True

    def feed(self, piece: str) -> tuple[str, list[ToolCall]]:
        if self.plain(piece):
            return piece, []
        held = self._held + piece
        if _REJUDGE_ALWAYS < len(held) < min(self._judged * 5 // 4, self.max_hold + 1):
            self._held = held  # a long undecided markup is judged again only after it grew by a quarter
            return "", []
        return self._scan(held, final=False)

    def finish(self) -> tuple[str, list[ToolCall]]:
        text, calls = self._scan(self._held, final=True)
        if self._ws and not self.found:
            text += self._ws  # an answer of whitespace only: unchanged
        self._ws = ""
        return text, calls

    def _scan(self, text: str, final: bool) -> tuple[str, list[ToolCall]]:
        out: list[str] = []
        calls: list[ToolCall] = []
        pos, n = 0, len(text)
        while pos < n:
            if self._boundary:
                k = ws(text, pos)
                if k > pos:
                    self._ws += text[pos:k]
                    pos = k
                    continue
            q = self._next(text, pos)
            if q > pos:
                self._release(out, text[pos:q])
                pos = q
                continue
            verdict = self._judge(text, pos, final)
            if verdict is MORE:
                self._judged = n - pos
                break
            if isinstance(verdict, Found):
                calls.extend(verdict.calls)
                self.found, self._boundary, self._ws = True, True, ""
                self._line, self._ticks = "", 0
                pos = verdict.end
            else:
                step = 1 if isinstance(verdict, Miss) else verdict
                self._release(out, text[pos:pos + step])
                pos += step
        self._held = text[pos:]
        return "".join(out), calls

    def _next(self, text: str, pos: int) -> int:
        """Where the next possible opener (or marker) is."""
        triggers = "`" if self._fence else "<" if self._think else "<[`{" if self._boundary else "<[`"
        best = len(text)
        for c in triggers:
            k = text.find(c, pos, best)
            if k >= 0:
                best = k
        return best

    def _release(self, out: list[str], s: str) -> None:
        if self._boundary:
            out.append(self._ws)
            self._ws, self._boundary = "", False
        out.append(s)
        nl = s.rfind("\n")
        tail = s[nl + 1:] if nl >= 0 else s
        self._line = (tail if nl >= 0 else self._line + tail)[-_LINE_KEPT:]
        self._ticks = (0 if nl >= 0 else self._ticks) + tail.count("`")

    def _judge(self, text: str, pos: int, final: bool) -> Found | Miss | int:
        """At a possible opener: a call, wait for more, or the number of characters that are plain text."""
        if self._fence or self._think:
            marker = FENCE if self._fence else UNTHINK
            if text.startswith(marker, pos) and (self._think or not self._line.strip()):
                self._fence = self._think = False
                return len(marker)
            return MORE if not final and prefix_of(text, pos, marker) else 1
        if text.startswith(THINK, pos):
            self._think = True
            return len(THINK)
        if text[pos] == "`":
            return self._backtick(text, pos, final)
        if self._ticks % 2 or (self._line.rstrip(" \t")[-1:] or "x") in _QUOTES:
            return 1  # inside inline code, or quoted
        return self._bounded(text, pos, final, self._openers(text, pos, final))

    def _bounded(self, text: str, pos: int, final: bool, verdict: Found | Miss) -> Found | Miss | int:
        if verdict is MORE:
            return 1 if len(text) - pos > self.max_hold else MORE
        if not isinstance(verdict, Found) or verdict.end - pos > self.max_hold:
            return 1
        k = verdict.end
        while k < len(text) and text[k] in " \t":
            k += 1
        if k >= len(text):
            return verdict if final else MORE
        return verdict if text[k] in _AFTER_OK else 1  # more prose on the call's line: it was quoted

    def _openers(self, text: str, pos: int, final: bool, inner: bool = False) -> Found | Miss:
        c, more = text[pos], False
        for opener, parse in _TABLE.get(c, ()):
            if text.startswith(opener, pos):
                verdict = parse(text, pos, opener, self.offered, final)
                if isinstance(verdict, Found):
                    return verdict
                more = more or verdict is MORE
            elif not final and prefix_of(text, pos, opener):
                more = True
        if c in "{[" and (self._boundary or inner):
            verdict = llama.bare(text, pos, self.offered, final)
            if isinstance(verdict, Found):
                return verdict
            more = more or verdict is MORE
            if inner:
                got = json_calls(text, pos, self.offered, final)
                if not isinstance(got, Miss):
                    return Found(got[0], tuple(got[1]))
                more = more or got is MORE
        if c == "<" and not final and prefix_of(text, pos, THINK):
            more = True
        return MORE if more else NO

    def _backtick(self, text: str, pos: int, final: bool) -> Found | Miss | int:
        """A fence at the start of a line: a fenced call that ends the answer, or a code block (its text is text)."""
        if self._line.strip():
            return 1
        if not text.startswith(FENCE, pos):
            return MORE if not final and prefix_of(text, pos, FENCE) else 1
        verdict = self._bounded(text, pos, final, self._fenced(text, pos, final))
        if verdict == 1:
            self._fence = True
            return len(FENCE)
        return verdict

    def _fenced(self, text: str, pos: int, final: bool) -> Found | Miss:
        head = _FENCE_HEAD.match(text, pos + 3)
        if head is None:
            maybe = not final and _FENCE_MAYBE.match(text, pos + 3) is not None and len(text) - pos < 64
            return MORE if maybe else NO
        if head.group(1).lower() not in _FENCE_LANGS:
            return NO
        k, calls = head.end(), list[ToolCall]()
        while True:
            k = ws(text, k)
            if text.startswith(FENCE, k):
                break
            if k >= len(text) or prefix_of(text, k, FENCE):
                return NO if final else MORE
            verdict = self._openers(text, k, False, inner=True)
            if not isinstance(verdict, Found):
                return NO if final else verdict
            calls.extend(verdict.calls)
            k = verdict.end
        if not calls or ws(text, k + 3) < len(text):
            return NO  # an empty block, or the answer goes on after it: an example, not a call
        return Found(k + 3, tuple(calls)) if final else MORE


def rescue_text(text: str, offered_tools: Any) -> tuple[str, list[ToolCall]]:
    """``text`` without the tool calls it carries in a known markup, and those calls (only tools in
    ``offered_tools`` — a request's ``tools``, or an :class:`Offered` — count). Without calls ``text`` is returned
    unchanged."""
    offered = offered_tools if isinstance(offered_tools, Offered) else Offered(offered_tools)
    if not offered or not text:
        return text, []
    scanner = Scanner(offered)
    head, calls = scanner.feed(text)
    tail, more = scanner.finish()
    calls.extend(more)
    return (head + tail, calls) if calls else (text, [])
