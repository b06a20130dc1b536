from django.core.management.base import CommandError

from agents.audit import actor_name
from agents.pushing.management.commands._base import PushCommand
from agents.pushing.models import MessageTemplate
from agents.pushing.services import resolve_tenant
from agents.pushing.template_services import (
    save_message_template,
    send_message_template,
    template_variables,
)


def view(t: MessageTemplate) -> dict:
    return {
        "slug": t.slug,
        "title": t.title,
        "text": t.text,
        "tags": t.tags,
        "usage_count": t.usage_count,
        "variables": template_variables(t.text),
        "enabled": t.enabled,
    }


class Command(PushCommand):
    help = (
        "Message templates: list (most used first), create --title T --text X [--tag ...], "
        "or send SLUG --user CONSUMER_USER_ID [--var NAME=VALUE ...] (counts the use). "
        "Templates and users are those of --tenant (default 'default')."
    )

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["list", "create", "send"])
        parser.add_argument("slug", nargs="?")
        parser.add_argument("--title", default="")
        parser.add_argument("--text", default="")
        parser.add_argument("--tag", action="append", dest="tags", default=[])
        parser.add_argument("--user", metavar="CONSUMER_USER_ID")
        parser.add_argument("--tenant", default="default")
        parser.add_argument(
            "--var", action="append", dest="variables", default=[], metavar="NAME=VALUE"
        )

    def handle(self, *args, action, slug, **options):
        actor = actor_name(command="message_templates")
        tenant = resolve_tenant(options["tenant"])
        if action == "list":
            views = [view(t) for t in MessageTemplate.objects.filter(tenant=tenant)[:200]]
            text = "\n".join(f"{v['slug']} ({v['usage_count']} uses)" for v in views)
            self.emit(options, {"results": views}, text or "No message templates.")
        elif action == "create":
            template = save_message_template(
                actor=actor,
                title=options["title"],
                text=options["text"],
                tags=options["tags"],
                tenant=tenant,
            )
            self.emit(options, view(template), f"Created message template '{template.slug}'.")
        else:
            if not slug or not options["user"]:
                raise CommandError("send needs SLUG and --user CONSUMER_USER_ID.")
            variables = {}
            for item in options["variables"]:
                name, sep, value = item.partition("=")
                if not sep:
                    raise CommandError(f"--var needs NAME=VALUE (got '{item}').")
                variables[name] = value
            result = send_message_template(
                slug, options["user"], actor=actor, tenant=tenant, variables=variables
            )
            self.emit(options, result, f"Enqueued message {result['message_id']}.")
