"""Host-app events (SPEC §15): the one door through which lower layers report what a host
product may want to hear about — a pairing completed, a binding revoked, a job replied to
or dead-lettered, a budget cap reached.

``agents``, ``workers`` and ``telegram`` must not import the consumer API (it stands above
them), so they ``emit`` a Django signal inside the transaction that makes the change; the
consumer API app connects the receiver that stores one EventDelivery row per subscribed key
in that same transaction (so a rolled-back change sends nothing). With no receiver
connected an emit costs nothing.
"""

from __future__ import annotations

from django.dispatch import Signal

PAIRING_COMPLETED = "pairing.completed"
BINDING_REVOKED = "binding.revoked"
MESSAGE_REPLIED = "message.replied"
MESSAGE_DEAD_LETTERED = "message.dead_lettered"
BUDGET_PAUSED = "budget.paused"
EVENT_TYPES = (
    PAIRING_COMPLETED,
    BINDING_REVOKED,
    MESSAGE_REPLIED,
    MESSAGE_DEAD_LETTERED,
    BUDGET_PAUSED,
)

# Sent with event_type, agent_key ("" = every agent, e.g. the global budget cap),
# consumer_user_id (or None) and data (the event's own ids and figures, JSON-ready).
host_event = Signal()


def emit(event_type: str, *, agent_key: str, consumer_user_id: str | None, data: dict) -> None:
    """Report an event; call inside the transaction of the state change it describes."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"Unknown host event type {event_type!r}.")
    if not host_event.has_listeners():
        return
    host_event.send(
        sender=event_type,
        event_type=event_type,
        agent_key=agent_key,
        consumer_user_id=consumer_user_id,
        data=data,
    )
