"""Fuzz the webhook with random JSON: never a 5xx, never a partial write."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telegram.models import IngressIssue, TelegramUpdate
from workers.models import Message

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=50),
    st.integers(4000, 5000).map(lambda n: "y" * n),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
ids = st.one_of(
    st.integers(), st.text(max_size=40), st.none(), st.booleans(), st.floats(allow_nan=False)
)
message = st.fixed_dictionaries(
    {},
    optional={
        "message_id": ids,
        "from": st.one_of(json_values, st.fixed_dictionaries({"id": ids})),
        "chat": st.one_of(json_values, st.fixed_dictionaries({"id": ids})),
        "text": st.one_of(
            st.text(max_size=300),
            json_values,
            st.just("/start X"),
            st.integers(20_000, 21_000).map(lambda n: "z" * n),
        ),
        "caption": json_values,
        "photo": st.one_of(
            json_values,
            st.lists(
                st.fixed_dictionaries(
                    {"file_id": ids}, optional={"width": ids, "height": ids, "file_size": ids}
                ),
                max_size=3,
            ),
        ),
        "document": st.one_of(json_values, st.fixed_dictionaries({"file_id": ids})),
    },
)
updates = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"update_id": st.one_of(ids, st.integers(-(2**70), 2**70))},
        optional={
            "message": st.one_of(message, json_values),
            "edited_message": message,
            "callback_query": json_values,
        },
    ),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(update=updates)
def test_webhook_never_5xx_never_partial(make_bot, post_update, update):
    from telegram.models import Bot

    if not Bot.objects.filter(bot_identity="100").exists():
        make_bot("alpha", "100")
    before = (TelegramUpdate.objects.count(), Message.objects.count(), IngressIssue.objects.count())
    response = post_update("100", None, raw=json.dumps(update).encode())
    assert response.status_code < 500, response.content
    after = (TelegramUpdate.objects.count(), Message.objects.count(), IngressIssue.objects.count())
    if response.status_code == 400:
        assert after == before
    else:
        status = response.json()["status"]
        if status == "duplicate":
            assert after == before
        else:  # exactly one update recorded; a message only when enqueued
            assert after[0] == before[0] + 1
            assert after[1] == before[1] + (1 if status == "enqueued" else 0)
