from django import template

from workers.admin import dashboard_data

register = template.Library()


@register.inclusion_tag("admin/workers/dashboard.html")
def queue_dashboard():
    return dashboard_data()
