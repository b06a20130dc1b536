"""The reference worker's loop, delivery, snapshots, handlers and exit codes (SPEC §12).

A stateful fake of the worker API stands in for the server; Telegram is the worker's own
sender against ``responses``; the HTTP handler talks to a fake endpoint on 127.0.0.1.
"""

from __future__ import annotations

import gzip
import json
import logging
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import responses
from django.core.management import call_command

from tests.fakes.http import send_json
from workers.runtime.api_client import ApiError, LeaseLostError
from workers.runtime.archive import make_archive as write_archive
from workers.runtime.handlers import HandlerResult, JobContext, http_forward, load_handler
from workers.runtime.openclaw import openclaw
from workers.runtime.runner import (
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_UNAUTHORIZED,
    Heartbeat,
    WorkerRuntime,
    WorkerSettings,
)
from workers.runtime.telegram_sender import TelegramSender

TG = "https://tg.test"
TOKEN = "123:SECRET-bot-token-abcdef"


class Crash(BaseException):
    """Stands in for the process dying (not an Exception: the worker must not catch it)."""


class FakeServer:
    """Just enough server-side state: a queue of jobs, delivered marks, snapshots."""

    def __init__(self, jobs=(), *, stop_after_jobs=False):
        self.jobs = list(jobs)
        self.delivered_ids: set[int] = set()
        self.calls: list = []
        self.snapshots: dict[str, tuple[bytes, str]] = {}
        self.uploads: list[dict] = []
        self.stop_after_jobs = stop_after_jobs
        self.crash_on: str | None = None
        self.control_errors = 0
        self.heartbeats = 0
        self.manifest = {"skills": []}

    def _maybe_crash(self, name):
        if self.crash_on == name:
            self.crash_on = None
            raise Crash(name)

    def control(self):
        self.calls.append("control")
        if self.control_errors:
            self.control_errors -= 1
            raise ApiError(0, "network_error", "ConnectionError")
        stop = self.stop_after_jobs and not self.jobs
        return {"should_stop": stop, "reason": "draining" if stop else None}

    def claim(self, conversation_id=None):
        self.calls.append(("claim", conversation_id))
        if not self.jobs:
            return None
        job = dict(self.jobs.pop(0))
        if job["message_id"] in self.delivered_ids:
            job["delivered_at"] = "2026-12-01T10:00:00Z"
        return job

    def hydration(self, job):
        self.calls.append("hydration")
        return {"telegram_bot_token": TOKEN}

    def heartbeat(self, job):
        self.heartbeats += 1
        self.calls.append("heartbeat")

    def delivered(self, job):
        self.calls.append("delivered")
        self.delivered_ids.add(job["message_id"])
        self._maybe_crash("delivered")

    def append_messages(self, job, messages):
        self.calls.append(("append", tuple((m["role"], m["content"]) for m in messages)))
        self._maybe_crash("append")

    def complete(self, job, usage=None):
        self.calls.append("complete")

    def fail(self, job, error, usage=None):
        self.calls.append(("fail", error))

    def latest_snapshot(self, workspace_id, agent_key, conversation_id, before=None):
        self.calls.append(("latest_snapshot", conversation_id))
        if conversation_id not in self.snapshots or before is not None:
            return None  # one snapshot per conversation: nothing older than it
        _, sha = self.snapshots[conversation_id]
        return {"snapshot_id": 1, "sha256": sha, "download_url": f"mem://{conversation_id}"}

    def download_to(self, url, destination, max_bytes):
        data = self.snapshots[url.removeprefix("mem://")][0]
        destination.write_bytes(data)
        return len(data)

    def reject_snapshot(self, snapshot_id, error):
        self.calls.append(("reject_snapshot", snapshot_id, error))

    def upload_snapshot(self, **kwargs):
        self.calls.append(("snapshot", kwargs["conversation_id"], kwargs["reason"]))
        kwargs = {**kwargs, "archive": kwargs["archive"].read_bytes()}  # gone after the call
        self.uploads.append(kwargs)
        self.snapshots[kwargs["conversation_id"]] = (kwargs["archive"], kwargs["sha256"])
        return len(self.uploads)

    def skills_manifest(self, channel, workspace_id):
        self.calls.append("skills_manifest")
        return self.manifest


def make_archive(source):
    """(archive bytes, sha256) of a data dir, as the fake server stores them."""
    destination = source.with_name(source.name + ".tar.gz")
    sha256, _ = write_archive(source, destination)
    return destination.read_bytes(), sha256


def make_job(message_id=7, conversation="c1", text="hi", chat="55"):
    return {
        "message_id": message_id,
        "lease_id": f"L{message_id}",
        "conversation_id": conversation,
        "agent_key": "alpha",
        "payload": {
            "provider": "telegram",
            "message_text": text,
            "metadata": {"telegram_chat_id": chat},
        },
    }


def telegram_factory(sleeps):
    return lambda token: TelegramSender(token, base_url=TG, sleep=sleeps.append)


def make_runtime(server, tmp_path, handler=None, sleeps=None, **settings):
    worker_settings = WorkerSettings(
        api_url="http://srv", token="t", worker_id="w", data_dir=tmp_path / "data", **settings
    )
    return WorkerRuntime(
        worker_settings,
        server,
        handler or (lambda ctx: f"echo: {ctx.text}"),
        telegram_factory=telegram_factory([] if sleeps is None else sleeps),
    )


class RecordingStop:
    """Replaces ``stop_requested``: records every idle wait and stops after ``limit`` waits."""

    def __init__(self, limit):
        self.waits: list[float] = []
        self.limit = limit
        self._set = False

    def is_set(self):
        return self._set

    def set(self):
        self._set = True

    def wait(self, timeout):
        self.waits.append(timeout)
        if len(self.waits) >= self.limit:
            self._set = True
        return self._set


def _with_telegram(fn):
    """Run ``fn`` with Telegram's sendMessage answering ok (and no other HTTP allowed)."""
    with responses.RequestsMock() as mock:
        mock.post(f"{TG}/bot{TOKEN}/sendMessage", json={"ok": True, "result": {}})
        return fn()


def sent_texts():
    return [
        json.loads(c.request.body)["text"]
        for c in responses.calls
        if "sendMessage" in c.request.url
    ]


# Loop intervals ----------------------------------------------------------------------------
def test_idle_loop_polls_control_then_claim_every_two_seconds(tmp_path):
    server = FakeServer()
    rt = make_runtime(server, tmp_path)
    rt.stop_requested = RecordingStop(limit=3)
    assert rt.run() == EXIT_OK
    assert rt.stop_requested.waits == [2.0, 2.0, 2.0]
    polls = [
        c for c in server.calls if c == "control" or (isinstance(c, tuple) and c[0] == "claim")
    ]
    assert polls == ["control", ("claim", None)] * 3
    assert server.uploads == []  # no job ran: nothing worth a snapshot


def test_command_defaults_are_the_spec_intervals(monkeypatch):
    from workers.management.commands.run_worker import Command

    for name in ("AGENT_FACTORY_POLL_SECONDS", "AGENT_FACTORY_HEARTBEAT_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    options = Command().create_parser("manage.py", "run_worker").parse_args([])
    assert (options.poll_seconds, options.heartbeat_seconds) == (2.0, 10.0)
    assert options.idle_exit_seconds == 0  # never idle-exit unless told
    assert (
        WorkerSettings("u", "t", "w", None).poll_seconds,
        WorkerSettings("u", "t", "w", None).heartbeat_seconds,
    ) == (2.0, 10.0)


def test_heartbeat_runs_in_background_at_its_interval_and_stops_with_the_job(tmp_path):
    server = FakeServer()

    def slow(ctx):
        time.sleep(0.55)
        return "done"

    rt = make_runtime(server, tmp_path, handler=slow, heartbeat_seconds=0.1)
    assert _with_telegram(lambda: rt.process(make_job())) == "done"
    beats = server.heartbeats
    assert 2 <= beats <= 8  # ~5 beats in 0.55 s at 0.1 s (loose: CI machines are busy)
    time.sleep(0.3)
    assert server.heartbeats == beats  # stopped (and joined) when the job ended
    assert server.calls.index("complete") > max(
        i for i, c in enumerate(server.calls) if c == "heartbeat"
    )


def test_heartbeat_thread_can_be_joined():
    # Regression: an attribute named ``_stop`` shadowed Thread._stop and broke join().
    beat = Heartbeat(FakeServer(), make_job(), interval=0.01)
    beat.start()
    beat.stop()
    assert not beat.is_alive()


def test_lease_lost_mid_job_means_nothing_is_sent_or_recorded(tmp_path):
    class LosingServer(FakeServer):
        def heartbeat(self, job):
            raise LeaseLostError(409, "lease_lost", "taken")

    server = LosingServer()
    gate = threading.Event()
    with responses.RequestsMock() as mock:  # any Telegram call would fail the test
        rt = make_runtime(
            server, tmp_path, handler=lambda ctx: gate.wait(1) and "x", heartbeat_seconds=0.02
        )
        threading.Timer(0.2, gate.set).start()
        assert rt.process(make_job()) == "aborted"
        assert len(mock.calls) == 0
    assert not {"delivered", "complete"} & {c for c in server.calls if isinstance(c, str)}
    assert not any(isinstance(c, tuple) and c[0] in ("append", "fail") for c in server.calls)


def test_api_outage_is_waited_out_with_backoff(tmp_path):
    server = FakeServer(jobs=[make_job()], stop_after_jobs=True)
    server.control_errors = 2
    rt = make_runtime(server, tmp_path, poll_seconds=0.01)
    rt.stop_requested = RecordingStop(limit=100)
    assert _with_telegram(rt.run) == EXIT_OK
    assert rt.stop_requested.waits[:2] == [0.02, 0.04]  # doubling, capped at 8x
    assert "complete" in server.calls


def test_an_outage_past_the_limit_gives_up_and_a_shorter_one_does_not(tmp_path, monkeypatch):
    # A worker left polling a server that is gone (a machine whose app was torn down) would
    # run up the bill for ever; past the limit it exits instead (code 1 from the command).
    clock = [1000.0]
    monkeypatch.setattr("workers.runtime.runner.time.monotonic", lambda: clock[0])

    class Advancing(RecordingStop):
        def wait(self, timeout):
            clock[0] += 60  # each failed poll is a minute later
            return super().wait(timeout)

    server = FakeServer()
    server.control_errors = 10**6
    rt = make_runtime(server, tmp_path, poll_seconds=0.01, max_outage_seconds=900)
    rt.stop_requested = Advancing(limit=1000)
    with pytest.raises(ApiError) as info:
        rt.run()
    assert info.value.code == "unavailable" and "900 s" in info.value.detail
    assert len(rt.stop_requested.waits) == 15  # 15 minutes of retries, then no more

    recovering = FakeServer(jobs=[make_job()], stop_after_jobs=True)
    recovering.control_errors = 14  # back after 14 minutes: the worker carries on
    rt = make_runtime(recovering, tmp_path / "b", poll_seconds=0.01, max_outage_seconds=900)
    rt.stop_requested = Advancing(limit=1000)
    assert _with_telegram(rt.run) == EXIT_OK
    assert "complete" in recovering.calls


def test_unauthorized_control_propagates(tmp_path):
    class Refusing(FakeServer):
        def control(self):
            raise ApiError(401, "unauthorized", "bad token")

    rt = make_runtime(Refusing(), tmp_path)
    with pytest.raises(ApiError) as info:
        rt.run()
    assert info.value.status == 401


# Delivery ----------------------------------------------------------------------------------
@responses.activate
def test_long_reply_is_split_at_4096_characters(tmp_path):
    responses.post(f"{TG}/bot{TOKEN}/sendMessage", json={"ok": True, "result": {}})
    reply = ("word " * 2000).strip()  # 9999 characters
    server = FakeServer()
    rt = make_runtime(server, tmp_path, handler=lambda ctx: reply)
    assert rt.process(make_job()) == "done"
    texts = sent_texts()
    assert len(texts) == 3 and all(len(t) <= 4096 for t in texts)
    assert "".join(texts).replace(" ", "") == reply.replace(" ", "")
    assert all(json.loads(c.request.body)["chat_id"] == "55" for c in responses.calls)
    assert server.calls[-3:] == [
        "delivered",
        ("append", (("user", "hi"), ("assistant", reply))),
        "complete",
    ]


@responses.activate
def test_429_is_honoured_with_retry_after_then_sent_once(tmp_path):
    url = f"{TG}/bot{TOKEN}/sendMessage"
    responses.post(
        url,
        status=429,
        json={
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests",
            "parameters": {"retry_after": 3},
        },
    )
    responses.post(url, json={"ok": True, "result": {"message_id": 1}})
    sleeps: list[float] = []
    server = FakeServer()
    rt = make_runtime(server, tmp_path, sleeps=sleeps)
    assert rt.process(make_job()) == "done"
    assert sleeps == [3.0]
    assert sent_texts() == ["echo: hi", "echo: hi"]  # refused once, accepted once
    assert responses.calls[1].response.status_code == 200
    assert server.calls.index("delivered") < server.calls.index("complete")


@responses.activate
def test_telegram_refusal_fails_the_job_without_leaking_the_token(tmp_path):
    responses.post(
        f"{TG}/bot{TOKEN}/sendMessage",
        status=400,
        json={"ok": False, "error_code": 400, "description": "Bad Request: chat not found"},
    )
    server = FakeServer()
    assert make_runtime(server, tmp_path).process(make_job()) == "failed"
    (error,) = [c[1] for c in server.calls if isinstance(c, tuple) and c[0] == "fail"]
    assert "chat not found" in error and TOKEN not in error
    assert "delivered" not in server.calls


@responses.activate
def test_crash_after_delivered_never_sends_twice(tmp_path):
    responses.post(f"{TG}/bot{TOKEN}/sendMessage", json={"ok": True, "result": {}})
    server = FakeServer()
    server.crash_on = "delivered"  # the process dies right after recording delivery
    rt = make_runtime(server, tmp_path)
    with pytest.raises(Crash):
        rt.process(make_job())
    assert "complete" not in server.calls
    # The lease expires, the job is claimed again (by a fresh worker) with delivered_at set.
    server.jobs = [make_job()]
    fresh = make_runtime(server, tmp_path, handler=lambda ctx: pytest.fail("must not rerun"))
    assert fresh.process(server.claim()) == "redelivered"
    assert sent_texts() == ["echo: hi"]  # exactly one reply reached the user
    assert server.calls[-1] == "complete"


@responses.activate
def test_reply_is_sent_before_delivered_is_recorded(tmp_path):
    order = []

    def send(request):
        order.append("telegram")
        return 200, {}, json.dumps({"ok": True, "result": {}})

    responses.add_callback(responses.POST, f"{TG}/bot{TOKEN}/sendMessage", callback=send)

    class Ordered(FakeServer):
        def delivered(self, job):
            order.append("delivered")

        def complete(self, job, usage=None):
            order.append("complete")

    make_runtime(Ordered(), tmp_path).process(make_job())
    assert order == ["telegram", "delivered", "complete"]


def test_non_telegram_job_is_not_delivered_but_history_is_kept(tmp_path):
    job = make_job()
    job["payload"] = {"provider": "api", "message_text": "ping"}
    server = FakeServer()
    with responses.RequestsMock():
        assert make_runtime(server, tmp_path).process(job) == "done"
    assert ("append", (("user", "ping"), ("assistant", "echo: ping"))) in server.calls


# Snapshots ---------------------------------------------------------------------------------
def writing_handler(ctx):
    (ctx.data_dir / "workspace").mkdir(parents=True, exist_ok=True)
    with open(ctx.data_dir / "workspace" / "notes.txt", "a") as handle:
        handle.write(ctx.text + "\n")
    return "ok"


def test_should_stop_snapshots_the_data_dir_as_tar_gz(tmp_path):
    import io
    import tarfile

    server = FakeServer(jobs=[make_job(text="apples")], stop_after_jobs=True)
    rt = make_runtime(server, tmp_path, handler=writing_handler)
    assert _with_telegram(rt.run) == EXIT_OK
    (upload,) = server.uploads
    assert (upload["conversation_id"], upload["agent_key"], upload["reason"]) == (
        "c1",
        "alpha",
        "drain",
    )
    with tarfile.open(fileobj=io.BytesIO(upload["archive"]), mode="r:gz") as tar:
        member = tar.extractfile("workspace/notes.txt")
        assert member.read() == b"apples\n"
        assert not any(name.startswith("skills") for name in tar.getnames())


def test_idle_exit_snapshots(tmp_path):
    server = FakeServer(jobs=[make_job()])
    rt = make_runtime(
        server, tmp_path, handler=writing_handler, idle_exit_seconds=0.05, poll_seconds=0.02
    )
    assert _with_telegram(rt.run) == EXIT_OK
    assert [u["reason"] for u in server.uploads] == ["drain"]


def test_sigterm_finishes_the_job_then_snapshots(tmp_path):
    server = FakeServer(jobs=[make_job()])
    started = threading.Event()

    def slow(ctx):
        started.set()
        time.sleep(0.3)
        return writing_handler(ctx)

    rt = make_runtime(server, tmp_path, handler=slow, poll_seconds=0.02)
    # SIGTERM arrives mid-job (the command wires the signal to request_stop).
    threading.Thread(
        target=lambda: started.wait(5) and rt.request_stop(signal.SIGTERM, None)
    ).start()
    assert _with_telegram(rt.run) == EXIT_OK
    assert "complete" in server.calls  # the job in hand was finished, not dropped
    assert [u["reason"] for u in server.uploads] == ["signal"]
    assert server.calls[-1] == ("snapshot", "c1", "signal")


def test_start_restores_the_latest_snapshot_then_materialises_skills(tmp_path):
    source = tmp_path / "old"
    (source / "workspace").mkdir(parents=True)
    (source / "workspace" / "notes.txt").write_text("from the previous worker\n")
    server = FakeServer()
    server.snapshots["c1"] = make_archive(source)
    rt = make_runtime(server, tmp_path, conversation_id="c1", agent_key="alpha")
    rt.stop_requested = RecordingStop(limit=1)
    rt.run()
    data = tmp_path / "data"
    assert (data / "workspace" / "notes.txt").read_text() == "from the previous worker\n"
    assert server.calls.index(("latest_snapshot", "c1")) < server.calls.index("skills_manifest")
    assert ("claim", "c1") in server.calls  # a pinned worker only claims its conversation


def test_a_tampered_snapshot_is_not_restored(tmp_path):
    source = tmp_path / "old"
    (source / "workspace").mkdir(parents=True)
    (source / "workspace" / "notes.txt").write_text("x")
    archive, _ = make_archive(source)
    server = FakeServer()
    server.snapshots["c1"] = (archive, "0" * 64)
    rt = make_runtime(server, tmp_path)
    assert rt.restore_snapshot("c1", "alpha") is False
    assert not (tmp_path / "data" / "workspace").exists()
    # Reported, so the server never offers it again (SPEC §23).
    assert (
        "reject_snapshot",
        1,
        "refused at restore: the archive does not match its SHA-256",
    ) in server.calls


def test_switching_conversation_saves_then_empties_the_workspace(tmp_path):
    server = FakeServer(jobs=[make_job(7, "c1", "secret of c1"), make_job(8, "c2", "hello")])
    seen = {}

    def handler(ctx):
        notes = ctx.data_dir / "workspace" / "notes.txt"
        seen[ctx.job["conversation_id"]] = notes.read_text() if notes.exists() else ""
        return writing_handler(ctx)

    rt = make_runtime(server, tmp_path, handler=handler)

    def two_jobs():
        rt.process(server.claim())
        rt.process(server.claim())

    _with_telegram(two_jobs)
    assert seen == {"c1": "", "c2": ""}  # c2's agent never sees c1's files
    assert ("snapshot", "c1", "drain") in server.calls
    rt.snapshot("drain")
    assert b"secret" not in gzip.decompress(server.snapshots["c2"][0])


# Handlers ----------------------------------------------------------------------------------
def test_handler_by_dotted_path_and_unknown_names():
    from tests.e2e.handlers import slow_echo

    assert load_handler("tests.e2e.handlers.slow_echo") is slow_echo
    assert load_handler("http") is http_forward and load_handler("openclaw") is openclaw
    with pytest.raises(RuntimeError, match="Unknown handler 'nope'"):
        load_handler("nope")
    with pytest.raises(RuntimeError, match="'workers.runtime.runner.EXIT_OK' is not callable"):
        load_handler("workers.runtime.runner.EXIT_OK")


class _Gateway(BaseHTTPRequestHandler):
    answers: list = []
    received: list = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Gateway.received.append((dict(self.headers), json.loads(body)))
        status, payload = _Gateway.answers.pop(0)
        send_json(self, status, payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def gateway(monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Gateway.answers, _Gateway.received = [], []
    _Gateway.port = server.server_address[1]
    url = f"http://127.0.0.1:{server.server_address[1]}/agent"
    monkeypatch.delenv("AGENT_FACTORY_HANDLER_URL", raising=False)
    monkeypatch.setenv("OPENCLAW_GATEWAY_URL", url)
    monkeypatch.setenv("OPENCLAW_GATEWAY_TOKEN", "gw-token")
    yield _Gateway
    server.shutdown()
    server.server_close()


def test_http_forwarder_posts_the_job_and_returns_the_reply(gateway, tmp_path):
    gateway.answers.append((200, {"reply": "from the gateway"}))
    bundle = {"telegram_bot_token": TOKEN, "conversation": {"history": []}, "bridge": None}
    context = JobContext(job=make_job(text="question"), bundle=bundle, data_dir=tmp_path)
    assert http_forward(context) == "from the gateway"
    ((headers, body),) = gateway.received
    assert headers["Authorization"] == "Bearer gw-token"
    assert body["job"]["payload"]["message_text"] == "question"
    assert body["conversation"] == {"history": []}
    assert body["skills_dir"] == str(tmp_path / "skills")
    assert TOKEN not in json.dumps(body)  # the bot token stays with the worker


def test_http_forwarder_uses_the_agents_runtime(gateway, tmp_path):
    """SPEC §21: runtime.base_url and the model key win; the key is a header, not body."""
    answer = {"reply": {"text": "runtime reply"}, "usage": {"input_tokens": 4}}
    gateway.answers.append((200, answer))
    url = f"http://127.0.0.1:{gateway.port}/agent-specific"
    runtime = {"handler": "http", "base_url": url, "api_key": "sk-http-KEY", "model": "m"}
    bundle = {"conversation": {"history": []}, "runtime": runtime}
    context = JobContext(job=make_job(), bundle=bundle, data_dir=tmp_path)
    assert http_forward(context) == HandlerResult("runtime reply", {"input_tokens": 4})
    ((headers, body),) = gateway.received
    assert headers["Authorization"] == "Bearer sk-http-KEY"
    assert body["runtime"] == {"handler": "http", "base_url": url, "model": "m"}
    assert "sk-http-KEY" not in json.dumps(body)


def test_http_forwarder_errors_are_clear(gateway, tmp_path, monkeypatch):
    context = JobContext(job=make_job(), bundle={}, data_dir=tmp_path)
    gateway.answers.append((502, {"error": "down"}))
    with pytest.raises(RuntimeError, match="answered 502"):
        http_forward(context)
    gateway.answers.append((200, {"text": "wrong shape"}))
    with pytest.raises(RuntimeError, match="without a 'reply' string"):
        http_forward(context)
    monkeypatch.delenv("OPENCLAW_GATEWAY_URL")
    with pytest.raises(RuntimeError, match="needs the agent's base_url, AGENT_FACTORY_HANDLER_URL"):
        http_forward(context)


def test_http_forwarder_failure_fails_the_job_in_the_worker(gateway, tmp_path):
    gateway.answers.append((500, {}))
    server = FakeServer()
    with responses.RequestsMock(passthru_prefixes=("http://127.0.0.1",)):
        assert make_runtime(server, tmp_path, handler=http_forward).process(make_job()) == "failed"
    assert ("fail", "Handler endpoint answered 500.") in server.calls


# Exit codes (manage.py run_worker) ---------------------------------------------------------
API = "http://api.test/api/v1/worker"
WORKER_TOKEN = "wk-SECRET-9f3a71"


@pytest.fixture
def worker_env(monkeypatch, tmp_path):
    for name in ("AGENT_FACTORY_API_URL", "AGENT_FACTORY_WORKER_TOKEN", "AGENT_FACTORY_WORKER_ID"):
        monkeypatch.delenv(name, raising=False)
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    # The command calls logging.basicConfig(); a handler it adds here would hold on to this
    # test's captured stderr after it is closed, so the root handlers are put back after.
    root = logging.getLogger()
    handlers = list(root.handlers)
    yield [
        "--api-url",
        "http://api.test",
        "--token",
        WORKER_TOKEN,
        "--worker-id",
        "w1",
        "--data-dir",
        str(tmp_path / "d"),
    ]
    root.handlers[:] = handlers
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == previous
    signal.signal(signal.SIGTERM, previous[0])
    signal.signal(signal.SIGINT, previous[1])


def run_command(*args):
    with pytest.raises(SystemExit) as info:
        call_command("run_worker", *args)
    return info.value.code


def test_exit_2_when_required_settings_are_missing(worker_env, capsys):
    assert run_command("--api-url", "http://api.test") == EXIT_CONFIG
    assert "needs --token, --worker-id" in capsys.readouterr().err


def test_exit_2_for_an_unknown_handler_or_a_bad_url(worker_env, capsys):
    assert run_command(*worker_env, "--handler", "no.such.handler") == EXIT_CONFIG
    assert "Unknown handler" in capsys.readouterr().err
    assert run_command(*worker_env[2:], "--api-url", "api.test") == EXIT_CONFIG
    assert "http(s) URL" in capsys.readouterr().err


def test_exit_2_for_a_bad_interval_in_the_environment(worker_env, monkeypatch, capsys):
    from workers.management.commands.run_worker import Command

    monkeypatch.setenv("AGENT_FACTORY_POLL_SECONDS", "soon")
    with pytest.raises(SystemExit) as info:
        Command().run_from_argv(["manage.py", "run_worker", *worker_env])
    assert info.value.code == EXIT_CONFIG
    assert "'soon' is not a number of seconds" in capsys.readouterr().err


@responses.activate
def test_exit_3_when_the_token_is_refused(worker_env, capsys):
    responses.get(f"{API}/skills/manifest/", status=401, json={"error": "unauthorized"})
    responses.post(f"{API}/control/", status=401, json={"error": "unauthorized"})
    assert run_command(*worker_env) == EXIT_UNAUTHORIZED
    err = capsys.readouterr().err
    assert "refused this worker's token" in err and WORKER_TOKEN not in err


@responses.activate
def test_exit_0_when_the_server_says_stop(worker_env):
    responses.get(f"{API}/skills/manifest/", json={"skills": []})
    responses.post(
        f"{API}/control/", json={"should_stop": True, "reason": "draining", "status": "draining"}
    )
    assert run_command(*worker_env) == EXIT_OK
    assert responses.calls[-1].request.headers["Authorization"] == f"Bearer {WORKER_TOKEN}"
    assert [c.request.url.split("/worker/")[1] for c in responses.calls] == [
        "skills/manifest/?channel=stable&workspace_id=default",
        "control/",
    ]


@responses.activate
def test_the_worker_token_never_goes_to_another_origin():
    from workers.runtime.api_client import WorkerApiClient

    responses.get("http://api.test/api/v1/worker/snapshots/3/download/", body=b"same")
    responses.get("https://storage.test/bucket/3.tar.gz", body=b"elsewhere")
    client = WorkerApiClient("http://api.test", WORKER_TOKEN)
    assert client.download("http://api.test/api/v1/worker/snapshots/3/download/", 100) == b"same"
    assert client.download("https://storage.test/bucket/3.tar.gz", 100) == b"elsewhere"
    first, second = responses.calls
    assert first.request.headers["Authorization"] == f"Bearer {WORKER_TOKEN}"
    assert "Authorization" not in second.request.headers


def test_help_documents_the_exit_codes():
    from workers.management.commands.run_worker import Command

    text = " ".join(Command().create_parser("manage.py", "run_worker").format_help().split())
    assert "0 normal stop" in text and "2 bad configuration" in text and "3 the server" in text


@responses.activate
def test_exit_1_with_one_clear_line_for_another_api_error(worker_env, capsys):
    responses.get(f"{API}/skills/manifest/", json={"skills": []})
    responses.post(
        f"{API}/control/", status=403, json={"error": "forbidden", "detail": "Not a worker."}
    )
    assert run_command(*worker_env) == 1
    # The last line (log lines may come before it, depending on the logging set-up).
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "The worker API answered 403 forbidden: Not a worker.; stopping."


def test_without_a_bot_token_the_reply_goes_to_the_server_in_complete(tmp_path):
    """Server delivery (SPEC §22): no Telegram call from the worker, no ``delivered``; the
    reply and the history ride in the one complete."""

    class NoToken(FakeServer):
        def hydration(self, job):
            return {"telegram_bot_token": None}

        def complete(self, job, usage=None, *, reply=None, history=None):
            self.calls.append(("complete", reply, history))

    server = NoToken()
    with responses.RequestsMock():  # any HTTP call (to Telegram) would fail the test
        assert make_runtime(server, tmp_path).process(make_job()) == "done"
    assert server.calls[-1] == (
        "complete",
        {"text": "echo: hi", "format": "markdown"},
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "echo: hi"}],
    )
    assert "delivered" not in server.calls
    assert not any(call[0] == "append" for call in server.calls if isinstance(call, tuple))
