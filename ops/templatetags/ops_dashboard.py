"""The ``{% ops_dashboard %}`` tag of the admin index (ops/dashboard.py)."""

from django import template

from ops.dashboard import dashboard_for

register = template.Library()


@register.inclusion_tag("admin/ops/dashboard.html", takes_context=True)
def ops_dashboard(context):
    return dashboard_for(context["request"].user)
