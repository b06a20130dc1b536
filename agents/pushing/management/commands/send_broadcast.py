from agents.audit import actor_name
from agents.pushing.dispatch import drain_pending
from agents.pushing.management.commands._base import PushCommand
from agents.pushing.services import preview_broadcast, send_broadcast


class Command(PushCommand):
    help = (
        "Send TEXT to every active binding of the agents (all enabled agents by default): "
        "one queue job per bound user. Dry run by default: prints the targets."
    )

    def add_arguments(self, parser):
        parser.add_argument("--text", required=True)
        parser.add_argument("--title", default="")
        parser.add_argument("--agent", action="append", dest="agents", metavar="AGENT_KEY")
        parser.add_argument("--apply", action="store_true", help="Really send.")

    def handle(self, *args, text, title, agents, apply, **options):
        preview = preview_broadcast(agents)
        if not apply:
            lines = [f"{key}: {n} bound user(s)" for key, n in preview["by_agent"].items()]
            lines.append(f"Dry run: {preview['targets']} target(s). Add --apply to send.")
            self.emit(options, {**preview, "applied": False}, "\n".join(lines))
            return
        broadcast = send_broadcast(
            text, title=title, agent_keys=agents, actor=actor_name(command="send_broadcast")
        )
        drained = drain_pending(budget_seconds=3600)  # the command waits for its enqueues
        data = {
            "applied": True,
            "broadcast_id": broadcast.pk,
            "targets": broadcast.total_targets,
            **drained,
        }
        self.emit(
            options,
            data,
            f"Broadcast #{broadcast.pk}: {broadcast.total_targets} target(s), "
            f"{drained['enqueued']} enqueued, {drained['enqueue_failed']} failed.",
        )
