# Bindings carry their agent's tenant: "1 user -> 1 bot" holds per tenant (SPEC §15).

import django.db.models.deletion
from django.db import migrations, models


def tenant_from_agent(apps, schema_editor):
    IdentityBinding = apps.get_model("telegram", "IdentityBinding")
    AgentProfile = apps.get_model("agents", "AgentProfile")
    for agent_id, tenant_id in AgentProfile.objects.values_list("pk", "tenant_id"):
        IdentityBinding.objects.filter(agent_id=agent_id).update(tenant_id=tenant_id)


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0007_tenants"),
        ("telegram", "0006_identitybinding_send_as_agent_permission"),
    ]

    operations = [
        migrations.AddField(
            model_name="identitybinding",
            name="tenant",
            field=models.ForeignKey(
                editable=False, null=True, on_delete=django.db.models.deletion.PROTECT,
                related_name="+", to="agents.tenant",
            ),
        ),
        migrations.RunPython(tenant_from_agent, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="identitybinding",
            name="tenant",
            field=models.ForeignKey(
                editable=False, on_delete=django.db.models.deletion.PROTECT,
                related_name="+", to="agents.tenant",
            ),
        ),
        migrations.RemoveConstraint(
            model_name="identitybinding", name="binding_one_active_per_consumer"
        ),
        migrations.AddConstraint(
            model_name="identitybinding",
            constraint=models.UniqueConstraint(
                condition=models.Q(("status", "active")),
                fields=("tenant", "consumer_user_id"),
                name="binding_one_active_per_consumer",
            ),
        ),
    ]
