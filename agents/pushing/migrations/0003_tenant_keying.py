"""Pushing keyed by tenant (SPEC §15): templates, jobs, broadcasts and dispatch rows carry a
tenant; template keys and message-template slugs are unique per tenant. Existing rows go to
their agent's tenant, or ``default``."""

import agents.models
import django.db.models.deletion
from django.db import migrations, models


def fill_tenants(apps, schema_editor):
    Tenant = apps.get_model("agents", "Tenant")
    default, _ = Tenant.objects.get_or_create(slug="default", defaults={"name": "Default"})
    for name in ("PushJob", "PushTemplate", "MessageTemplate"):
        model = apps.get_model("pushing", name)
        model.objects.filter(agent__isnull=True).update(tenant=default)
        for row in model.objects.filter(agent__isnull=False).select_related("agent"):
            model.objects.filter(pk=row.pk).update(tenant_id=row.agent.tenant_id)
    PushDispatch = apps.get_model("pushing", "PushDispatch")
    for job in apps.get_model("pushing", "PushJob").objects.all():
        PushDispatch.objects.filter(job=job).update(tenant_id=job.tenant_id)
    Target = apps.get_model("pushing", "PushBroadcastDispatch")
    Target.objects.filter(agent__isnull=True).update(tenant=default)
    Broadcast = apps.get_model("pushing", "PushBroadcast")
    AgentProfile = apps.get_model("agents", "AgentProfile")
    for agent in AgentProfile.objects.all():
        Target.objects.filter(agent=agent).update(tenant_id=agent.tenant_id)
    for broadcast in Broadcast.objects.all():
        tenants = set(
            AgentProfile.objects.filter(agent_key__in=broadcast.agent_keys or []).values_list(
                "tenant_id", flat=True
            )
        )
        if len(tenants) == 1:
            Broadcast.objects.filter(pk=broadcast.pk).update(tenant_id=tenants.pop())


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0008_agent_delivery_mode"),
        ("pushing", "0002_push_skipped_for_budget"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="messagetemplate",
            options={"ordering": ["-usage_count", "slug", "id"]},
        ),
        migrations.AlterModelOptions(
            name="pushtemplate",
            options={"ordering": ["key", "id"]},
        ),
        migrations.RemoveIndex(
            model_name="pushjob",
            name="pushjob_consumer_idx",
        ),
        migrations.AddField(
            model_name="messagetemplate",
            name="agent",
            field=models.ForeignKey(
                blank=True,
                help_text="Empty: the whole tenant's. Set: only keys that see this agent see it.",
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="message_templates",
                to="agents.agentprofile",
            ),
        ),
        migrations.AddField(
            model_name="messagetemplate",
            name="tenant",
            field=models.ForeignKey(
                default=agents.models.default_tenant_id,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="message_templates",
                to="agents.tenant",
            ),
        ),
        migrations.AddField(
            model_name="pushbroadcast",
            name="tenant",
            field=models.ForeignKey(
                blank=True,
                help_text="Whose agents; empty for an operator's broadcast over several tenants.",
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="push_broadcasts",
                to="agents.tenant",
            ),
        ),
        migrations.AddField(
            model_name="pushbroadcastdispatch",
            name="tenant",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="agents.tenant",
            ),
        ),
        migrations.AddField(
            model_name="pushdispatch",
            name="tenant",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="agents.tenant",
            ),
        ),
        migrations.AddField(
            model_name="pushjob",
            name="tenant",
            field=models.ForeignKey(
                default=agents.models.default_tenant_id,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="push_jobs",
                to="agents.tenant",
            ),
        ),
        migrations.AddField(
            model_name="pushtemplate",
            name="agent",
            field=models.ForeignKey(
                blank=True,
                help_text="Empty: the whole tenant's. Set: only keys that see this agent see it.",
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="push_templates",
                to="agents.agentprofile",
            ),
        ),
        migrations.AddField(
            model_name="pushtemplate",
            name="tenant",
            field=models.ForeignKey(
                default=agents.models.default_tenant_id,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="push_templates",
                to="agents.tenant",
            ),
        ),
        migrations.AlterField(
            model_name="messagetemplate",
            name="slug",
            field=models.SlugField(help_text="Unique within the tenant.", max_length=100),
        ),
        migrations.AlterField(
            model_name="messagetemplate",
            name="text",
            field=models.TextField(
                help_text="May name variables as {{name}}, filled at send time."
            ),
        ),
        migrations.AlterField(
            model_name="pushtemplate",
            name="key",
            field=models.SlugField(help_text="Unique within the tenant.", max_length=100),
        ),
        migrations.AddIndex(
            model_name="pushjob",
            index=models.Index(
                fields=["tenant", "consumer_user_id"], name="pushjob_tenant_consumer_idx"
            ),
        ),
        migrations.AddConstraint(
            model_name="messagetemplate",
            constraint=models.UniqueConstraint(
                fields=("tenant", "slug"), name="messagetemplate_slug_per_tenant"
            ),
        ),
        migrations.AddConstraint(
            model_name="pushtemplate",
            constraint=models.UniqueConstraint(
                fields=("tenant", "key"), name="pushtemplate_key_per_tenant"
            ),
        ),
        migrations.RemoveConstraint(
            model_name="pushbroadcastdispatch",
            name="pushbroadcast_one_per_user",
        ),
        migrations.AddConstraint(
            model_name="pushbroadcastdispatch",
            constraint=models.UniqueConstraint(
                fields=("broadcast", "tenant", "consumer_user_id"),
                name="pushbroadcast_one_per_tenant_user",
            ),
        ),
        # Last: on PostgreSQL, updated rows' deferred FK checks forbid later ALTER TABLEs.
        migrations.RunPython(fill_tenants, migrations.RunPython.noop),
    ]
