"""The server and the worker runtime are two programs speaking one format: the worker keeps
its own copies of the skill layout (``workers.runtime.skill_layout``) and of Telegram's
message splitting (``workers.runtime.telegram_sender``), and these tests hold each copy to
the server's (``agents.skill_bundle``, ``telegram.bot_api``)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agents import skill_bundle as server
from telegram import bot_api as server_telegram
from workers.runtime import skill_layout as worker
from workers.runtime import telegram_sender as worker_telegram

files = st.lists(
    st.fixed_dictionaries(
        {"path": st.text(min_size=1, max_size=20), "content": st.text(max_size=200)}
    ),
    max_size=6,
    unique_by=lambda item: item["path"],
)


def test_both_sides_speak_the_same_layout():
    assert (worker.LAYOUT_VERSION, worker.MARKER) == (server.LAYOUT_VERSION, server.MARKER)
    assert worker.LAYOUT_VERSION == "openclaw-workspace-skill-v1"  # SPEC §13


def test_a_known_bundle_hashes_to_the_documented_value():
    bundle = [{"path": "scripts/index.mjs", "content": "x"}, {"path": "SKILL.md", "content": "é"}]
    expected = server.bundle_sha256(bundle)
    assert worker.bundle_sha256(bundle) == expected
    assert worker.bundle_sha256(list(reversed(bundle))) == expected  # sorted by path


@settings(max_examples=200, deadline=None)
@given(files)
def test_server_and_worker_compute_identical_hashes(bundle):
    assert worker.bundle_sha256(bundle) == server.bundle_sha256(bundle)
    for item in bundle:
        assert worker.file_sha256(item["content"]) == server.file_sha256(item["content"])


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab \n", max_size=120), st.integers(min_value=4, max_value=40))
def test_worker_splits_replies_as_the_server_client_does(text, limit):
    assert worker_telegram.split_message(text, limit) == server_telegram.split_message(text, limit)
    assert worker_telegram.MESSAGE_LIMIT == server_telegram.MESSAGE_LIMIT == 4096
