"""The checks of the scale-out proof catch what they claim to catch (no processes here)."""

from __future__ import annotations

from collections import Counter

from tests.e2e.scale_checks import Pass, parse_trace, reconcile_overlaps, reply_report
from tests.e2e.scale_fleet import database_url
from tests.e2e.scale_harness import ScaleConfig

SENT = {"1": ["a0", "a1", "a2"], "2": ["b0", "b1"]}


def test_all_replies_in_order_is_a_clean_report():
    report = reply_report(SENT, {"1": ["a0", "a1", "a2"], "2": ["b0", "b1"]})
    assert (report.lost, report.out_of_order, report.unexpected) == ([], [], [])
    assert report.answered_twice == Counter()


def test_a_missing_reply_is_lost():
    report = reply_report(SENT, {"1": ["a0", "a2"]})
    assert report.lost == [("1", "a1"), ("2", "b0"), ("2", "b1")]


def test_replies_swapped_within_a_chat_are_out_of_order():
    report = reply_report(SENT, {"1": ["a1", "a0", "a2"], "2": ["b0", "b1"]})
    assert report.out_of_order == [("1", ["a1", "a0", "a2"])]
    assert not report.lost


def test_a_second_copy_right_after_the_first_is_answered_twice_but_in_order():
    report = reply_report(SENT, {"1": ["a0", "a1", "a1", "a2"], "2": ["b0", "b1"]})
    assert report.answered_twice == Counter({"a1": 1})
    assert not report.out_of_order


def test_a_second_copy_after_a_later_reply_is_also_out_of_order():
    report = reply_report(SENT, {"1": ["a0", "a1", "a2", "a1"], "2": ["b0", "b1"]})
    assert report.answered_twice == Counter({"a1": 1})
    assert report.out_of_order == [("1", ["a0", "a1", "a2", "a1"])]


def test_a_reply_in_the_wrong_chat_is_unexpected_and_the_right_chat_lost_it():
    report = reply_report(SENT, {"1": ["a0", "a1", "a2", "b0"], "2": ["b1"], "3": ["x"]})
    assert report.unexpected == [("1", "b0"), ("3", "x")]
    assert report.lost == [("2", "b0")]


def passes(*spans) -> list[Pass]:
    return [Pass(pid=1, pass_id=str(i), begin=b, end=e) for i, (b, e) in enumerate(spans)]


def test_passes_one_after_the_other_do_not_overlap():
    assert reconcile_overlaps(passes((0, 10), (11, 20), (21, None))) == []


def test_overlapping_and_nested_passes_are_found():
    found = reconcile_overlaps(passes((0, 10), (2, 3), (5, 6), (10, 12), (30, 31)))
    assert [(a.pass_id, b.pass_id) for a, b in found] == [("0", "1"), ("0", "2"), ("0", "3")]


def test_a_pass_that_never_ended_overlaps_every_later_one():
    found = reconcile_overlaps(passes((0, None), (5, 6), (7, 8)))
    assert [(a.pass_id, b.pass_id) for a, b in found] == [("0", "1"), ("0", "2")]


def test_trace_lines_pair_begin_and_end_by_pass_id():
    lines = [
        "100 7 aa begin",
        "150 8 bb begin",
        "120 7 aa end",
        "garbage",
        "170 8 bb end",
        "200 7 cc begin",
    ]
    parsed = parse_trace(lines)
    assert [(p.pid, p.pass_id, p.begin, p.end) for p in parsed] == [
        (7, "aa", 100, 120),
        (8, "bb", 150, 170),
        (7, "cc", 200, None),
    ]


def test_updates_are_spread_evenly_over_conversations():
    config = ScaleConfig(updates=2003, conversations=200)
    counts = [config.updates_of(i) for i in range(200)]
    assert sum(counts) == 2003 and set(counts) == {10, 11} and counts[:3] == [11, 11, 11]


def test_database_url_of_a_connection():
    url = database_url(
        {"NAME": "test_af", "USER": "postgres", "PASSWORD": "p@ss", "HOST": "", "PORT": ""}
    )
    assert url == "postgres://postgres:p%40ss@127.0.0.1:5432/test_af"
    assert database_url({"NAME": "x", "USER": "u", "HOST": "db", "PORT": 6432}) == (
        "postgres://u@db:6432/x"
    )
