from django import template

from workers.dashboard import dashboard_for

register = template.Library()


@register.inclusion_tag("admin/workers/dashboard.html", takes_context=True)
def queue_dashboard(context):
    return dashboard_for(context["request"].user)
