# Tenants (SPEC §15): every agent belongs to one; existing agents move to ``default``.

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

import agents.models


def existing_agents_to_default(apps, schema_editor):
    Tenant = apps.get_model("agents", "Tenant")
    AgentProfile = apps.get_model("agents", "AgentProfile")
    tenant, _ = Tenant.objects.get_or_create(slug="default", defaults={"name": "Default"})
    AgentProfile.objects.filter(tenant__isnull=True).update(tenant=tenant)


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0006_monthly_budget_cap"),
    ]

    operations = [
        migrations.CreateModel(
            name="Tenant",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("slug", models.SlugField(max_length=64, unique=True)),
                ("name", models.CharField(blank=True, max_length=200)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now, editable=False)),
            ],
            options={"ordering": ["slug"]},
        ),
        migrations.AddField(
            model_name="agentprofile",
            name="tenant",
            field=models.ForeignKey(
                null=True, on_delete=django.db.models.deletion.PROTECT, related_name="agents", to="agents.tenant"
            ),
        ),
        migrations.RunPython(existing_agents_to_default, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="agentprofile",
            name="tenant",
            field=models.ForeignKey(
                default=agents.models.default_tenant_id,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="agents",
                to="agents.tenant",
            ),
        ),
    ]
