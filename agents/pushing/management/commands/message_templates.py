from django.core.management.base import CommandError

from agents.audit import actor_name
from agents.pushing.management.commands._base import PushCommand
from agents.pushing.models import MessageTemplate
from agents.pushing.template_services import save_message_template, send_message_template


def view(t: MessageTemplate) -> dict:
    return {
        "slug": t.slug,
        "title": t.title,
        "text": t.text,
        "tags": t.tags,
        "usage_count": t.usage_count,
        "enabled": t.enabled,
    }


class Command(PushCommand):
    help = (
        "Message templates: list (most used first), create --title T --text X [--tag ...], "
        "or send SLUG --user CONSUMER_USER_ID (counts the use)."
    )

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["list", "create", "send"])
        parser.add_argument("slug", nargs="?")
        parser.add_argument("--title", default="")
        parser.add_argument("--text", default="")
        parser.add_argument("--tag", action="append", dest="tags", default=[])
        parser.add_argument("--user", metavar="CONSUMER_USER_ID")

    def handle(self, *args, action, slug, **options):
        actor = actor_name(command="message_templates")
        if action == "list":
            views = [view(t) for t in MessageTemplate.objects.all()[:200]]
            text = "\n".join(f"{v['slug']} ({v['usage_count']} uses)" for v in views)
            self.emit(options, {"results": views}, text or "No message templates.")
        elif action == "create":
            template = save_message_template(
                actor=actor, title=options["title"], text=options["text"], tags=options["tags"]
            )
            self.emit(options, view(template), f"Created message template '{template.slug}'.")
        else:
            if not slug or not options["user"]:
                raise CommandError("send needs SLUG and --user CONSUMER_USER_ID.")
            result = send_message_template(slug, options["user"], actor=actor)
            self.emit(options, result, f"Enqueued message {result['message_id']}.")
