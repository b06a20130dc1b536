"""The reference worker follows a fair-share reassignment (SPEC §6.2): control names the
new conversation; the worker snapshots the old one at once (ending its handoff), empties
the data dir and claims in the new conversation."""

from __future__ import annotations

import io
import tarfile

from tests.workers.test_runtime_loop import (
    FakeServer,
    RecordingStop,
    _with_telegram,
    make_job,
    make_runtime,
    writing_handler,
)


class ReassigningServer(FakeServer):
    """Serves one job in c1, then (as reconcile would) moves the worker to c2."""

    def __init__(self):
        super().__init__(jobs=[make_job(7, "c1", "one")])
        self.assigned = "c1"

    def control(self):
        return {**super().control(), "conversation_id": self.assigned}

    def claim(self, conversation_id=None):
        if conversation_id not in (None, self.assigned):
            self.calls.append(("claim", conversation_id))
            return None  # the server's rule: only the assigned conversation
        job = super().claim(conversation_id)
        if job is None and self.assigned == "c1":
            self.assigned = "c2"
            self.jobs.append(make_job(8, "c2", "two"))
        return job


def test_reassigned_worker_snapshots_the_old_conversation_then_claims_the_new(tmp_path):
    server = ReassigningServer()
    seen = {}

    def handler(ctx):
        notes = ctx.data_dir / "workspace" / "notes.txt"
        seen[ctx.job["conversation_id"]] = notes.read_text() if notes.exists() else ""
        return writing_handler(ctx)

    rt = make_runtime(server, tmp_path, handler=handler, conversation_id="c1", agent_key="alpha")
    rt.stop_requested = RecordingStop(limit=3)
    _with_telegram(rt.run)
    calls = [c for c in server.calls if isinstance(c, tuple) and c[0] in ("claim", "snapshot")]
    handed_off = calls.index(("snapshot", "c1", "drain"))
    # The old workspace is saved before the first claim in the new conversation, which is
    # made for c2 (a claim restricted to c1 would get nothing from the server).
    assert calls.index(("claim", "c2")) == handed_off + 1
    assert ("claim", "c1") not in calls[handed_off:]
    assert seen == {"c1": "", "c2": ""}  # c2's agent never sees c1's files
    with tarfile.open(fileobj=io.BytesIO(server.snapshots["c1"][0]), mode="r:gz") as tar:
        assert tar.extractfile("workspace/notes.txt").read() == b"one\n"
