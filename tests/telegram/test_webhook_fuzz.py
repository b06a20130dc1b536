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


texts = st.one_of(
    st.text(max_size=60),
    st.builds(lambda c: f"/start {c}", st.text(max_size=12)),
    st.builds(lambda c: f"/start@alpha_bot {c}", st.sampled_from(["", "ABCDEFGHJK", "x" * 200])),
    st.just("/start"),
)
shaped_updates = st.fixed_dictionaries(
    {
        "update_id": st.integers(0, 50),
        "message": st.fixed_dictionaries(
            {
                "from": st.fixed_dictionaries({"id": st.integers(1, 4)}),
                "chat": st.fixed_dictionaries({"id": st.integers(1, 4)}),
            },
            optional={
                "text": texts,
                "caption": texts,
                "voice": st.fixed_dictionaries({"file_id": st.text(min_size=1, max_size=300)}),
            },
        ),
    }
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    update=shaped_updates,
    bot=st.sampled_from(["100", "200", "300"]),
    secret_ok=st.booleans(),
)
def test_webhook_fuzz_keeps_every_table_consistent(make_bot, post_update, update, bot, secret_ok):
    """Plausible updates on bots of every kind (open, binding required, disabled), with pairing
    attempts: whatever the outcome, each recorded update has exactly the rows it implies."""
    from telegram.models import Bot, IdentityBinding
    from telegram.pairing import create_pairing_code

    if not Bot.objects.exists():
        make_bot("alpha", "100", username="alpha_bot")
        make_bot("beta", "200", require_telegram_binding=True)
        make_bot("gamma", "300", enabled=False)
        create_pairing_code("u1", "beta", actor="t")
    before_updates = TelegramUpdate.objects.count()
    response = post_update(bot, update, secret="s" * 40 if secret_ok else "forged")
    assert response.status_code < 500, response.content
    if not secret_ok:
        assert response.status_code == 403
        assert TelegramUpdate.objects.count() == before_updates
    else:
        assert response.status_code == 200
        status = response.json()["status"]
        expected = 0 if status == "duplicate" else 1
        assert TelegramUpdate.objects.count() == before_updates + expected
    outcomes = list(TelegramUpdate.objects.values_list("outcome", "message_id"))
    enqueued = [mid for outcome, mid in outcomes if outcome == "enqueued"]
    assert Message.objects.count() == len(enqueued)
    assert set(Message.objects.values_list("pk", flat=True)) == set(enqueued)
    routed_issues = sum(1 for outcome, _ in outcomes if outcome in ("unbound", "unroutable"))
    assert IngressIssue.objects.count() == routed_issues
    paired = sum(1 for outcome, _ in outcomes if outcome == "paired")
    assert IdentityBinding.objects.filter(source="telegram_pairing").count() == paired
    text = update["message"].get("text")
    if (
        secret_ok
        and isinstance(text, str)
        and len(text.split()) == 2
        and text.split()[0] == "/start"
    ):
        assert response.json()["status"] in ("paired", "pairing_failed", "duplicate")
