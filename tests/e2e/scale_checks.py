"""Pure checks of the scale-out proof (tests/e2e/test_scale_out.py): reconcile passes that
overlapped, and replies lost, out of order, sent twice or sent to the wrong chat."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Pass:
    pid: int
    pass_id: str
    begin: int
    end: int | None = None


def parse_trace(lines) -> list[Pass]:
    """Reconcile passes from ``AGENT_FACTORY_RECONCILE_TRACE_FILE`` lines
    (``<monotonic ns> <pid> <pass id> <begin|end>``), in order of their beginning."""
    passes: dict[str, Pass] = {}
    for line in lines:
        parts = line.split()
        if len(parts) != 4:
            continue
        stamp, pid, pass_id, event = int(parts[0]), int(parts[1]), parts[2], parts[3]
        if event == "begin":
            passes[pass_id] = Pass(pid=pid, pass_id=pass_id, begin=stamp)
        elif event == "end" and pass_id in passes:
            passes[pass_id].end = stamp
    return sorted(passes.values(), key=lambda p: p.begin)


def reconcile_overlaps(passes: list[Pass]) -> list[tuple[Pass, Pass]]:
    """Pairs of passes that ran at the same time. A pass without an end counts as still
    running (so anything that began after it overlaps it)."""
    overlaps = []
    running: Pass | None = None  # the pass that ends last among those seen so far
    for current in passes:
        if running is not None and (running.end is None or current.begin <= running.end):
            overlaps.append((running, current))
        if running is None or _ends_after(current, running):
            running = current
    return overlaps


def _ends_after(one: Pass, other: Pass) -> bool:
    """``one`` ends after ``other`` (a pass that never ended ends last)."""
    if other.end is None:
        return False
    return one.end is None or one.end > other.end


@dataclass
class ReplyReport:
    lost: list[tuple[str, str]] = field(default_factory=list)
    out_of_order: list[tuple[str, list[str]]] = field(default_factory=list)
    answered_twice: Counter = field(default_factory=Counter)
    unexpected: list[tuple[str, str]] = field(default_factory=list)


def reply_report(expected: dict[str, list[str]], received: dict[str, list[str]]) -> ReplyReport:
    """Compare the replies each chat received (in arrival order) with the texts it sent
    (in sending order): lost ones, replies out of order, extra copies, and replies that do
    not belong to the chat at all."""
    report = ReplyReport()
    for chat, sent in expected.items():
        position = {text: index for index, text in enumerate(sent)}
        got = received.get(chat, [])
        for text in sent:
            if text not in got:
                report.lost.append((chat, text))
        highest = -1
        for text in got:
            index = position.get(text)
            if index is None:
                report.unexpected.append((chat, text))
                continue
            if index < highest:
                report.out_of_order.append((chat, got))
                break
            highest = index
        for text, count in Counter(t for t in got if t in position).items():
            if count > 1:
                report.answered_twice[text] = count - 1
    for chat, got in received.items():
        if chat not in expected:
            report.unexpected.extend((chat, text) for text in got)
    return report
