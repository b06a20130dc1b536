"""Migration 0003: existing pushing rows go to their agent's tenant, or ``default``."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = ("pushing", "0002_push_skipped_for_budget")
AFTER = ("pushing", "0003_tenant_keying")


def targets(executor, pushing):
    """Every other app at its latest migration, pushing at ``pushing``."""
    others = [node for node in executor.loader.graph.leaf_nodes() if node[0] != "pushing"]
    return [*others, pushing]


@pytest.mark.django_db(transaction=True)
def test_existing_rows_are_keyed_by_tenant():
    executor = MigrationExecutor(connection)
    executor.migrate(targets(executor, BEFORE))
    apps = executor.loader.project_state(targets(executor, BEFORE)).apps
    Tenant = apps.get_model("agents", "Tenant")
    Agent = apps.get_model("agents", "AgentProfile")
    acme = Tenant.objects.create(slug="acme")
    gamma = Agent.objects.create(agent_key="gamma", tenant=acme)
    Job = apps.get_model("pushing", "PushJob")
    job = Job.objects.create(
        target="agent_users", agent=gamma, text="x", periodicity="manual", timezone="UTC"
    )
    lone = Job.objects.create(consumer_user_id="u1", text="x", periodicity="manual")
    Dispatch = apps.get_model("pushing", "PushDispatch")
    Dispatch.objects.create(job=job, run_key="manual:1", scheduled_for="2026-01-01T00:00Z")
    Broadcast = apps.get_model("pushing", "PushBroadcast")
    broadcast = Broadcast.objects.create(text="x", agent_keys=["gamma"])
    Target = apps.get_model("pushing", "PushBroadcastDispatch")
    Target.objects.create(broadcast=broadcast, consumer_user_id="u1", agent=gamma)
    apps.get_model("pushing", "MessageTemplate").objects.create(slug="w", title="W", text="x")

    executor = MigrationExecutor(connection)
    executor.migrate(targets(executor, AFTER))
    apps = executor.loader.project_state(targets(executor, AFTER)).apps

    def tenant_of(model, **lookup):
        row = apps.get_model("pushing", model).objects.get(**lookup)
        return row.tenant.slug if row.tenant_id else None

    assert tenant_of("PushJob", pk=job.pk) == "acme"
    assert tenant_of("PushJob", pk=lone.pk) == "default"
    assert tenant_of("PushDispatch", job_id=job.pk) == "acme"
    assert tenant_of("PushBroadcast", pk=broadcast.pk) == "acme"
    assert tenant_of("PushBroadcastDispatch", broadcast_id=broadcast.pk) == "acme"
    assert tenant_of("MessageTemplate", slug="w") == "default"
