"""The ``llm`` handler (SPEC §21) against a fake OpenAI-compatible server on loopback:
what it sends, retries inside the job, failure texts without the key, usage."""

from __future__ import annotations

import json
import logging

import pytest
import requests

from tests.fakes.openai_server import FakeOpenAI
from workers.runtime.handlers import HandlerError, HandlerResult, JobContext, load_handler
from workers.runtime.llm import ChatCall, llm_handler
from workers.runtime.runner import WorkerRuntime, WorkerSettings

KEY = "sk-test-KEY-4f9a1c7e2b"


def context(tmp_path, base_url, text="What is 2+2?", history=(), attachments=None, **runtime):
    payload = {"provider": "telegram", "message_text": text}
    if attachments:
        payload["attachments"] = attachments
    bundle = {
        "payload": payload,
        "conversation": {"history": list(history)},
        "runtime": {
            "handler": "llm",
            "model": "openai/gpt-4o-mini",
            "base_url": base_url,
            "api_key": KEY,
            "temperature": 0.3,
            "max_tokens": 256,
            "timeout_seconds": 5,
            "system_prompt": "You are terse.",
            **runtime,
        },
    }
    job = {"message_id": 1, "lease_id": "L", "conversation_id": "c", "payload": payload}
    return JobContext(job=job, bundle=bundle, data_dir=tmp_path)


def quick(ctx, sleeps=None):
    """The handler with waits recorded instead of slept."""
    waits = sleeps if sleeps is not None else []
    return llm_handler(ctx, call=ChatCall(ctx.runtime, sleep=waits.append))


def test_one_call_with_prompt_history_message_and_parameters(tmp_path):
    history = [
        {"role": "user", "content": "My name is Ada.", "at": "2026-01-01T00:00:00Z"},
        {"role": "assistant", "content": "Hello Ada.", "at": "2026-01-01T00:00:01Z"},
        {"role": "tool", "content": "ignored tool output"},
    ]
    with FakeOpenAI(reply="4", usage={"prompt_tokens": 30, "completion_tokens": 2}) as fake:
        result = quick(context(tmp_path, fake.base_url, history=history))
    assert result == HandlerResult(
        text="4", usage={"input_tokens": 30, "output_tokens": 2, "model": "openai/gpt-4o-mini"}
    )
    [sent] = fake.requests
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["Authorization"] == f"Bearer {KEY}"
    assert sent["body"] == {
        "model": "openai/gpt-4o-mini",  # as given: OpenRouter names keep their slash
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "My name is Ada."},
            {"role": "assistant", "content": "Hello Ada."},
            {"role": "user", "content": "What is 2+2?"},
        ],
        "stream": False,
        "temperature": 0.3,
        "max_tokens": 256,
    }


def test_optional_parameters_and_key_are_left_out(tmp_path):
    ctx = context(tmp_path, "", temperature=None, max_tokens=None, api_key=None, system_prompt="")
    with FakeOpenAI() as fake:
        ctx.runtime["base_url"] = fake.base_url + "/"  # a trailing slash is fine
        quick(ctx)
    [sent] = fake.requests
    assert "Authorization" not in sent["headers"]
    assert set(sent["body"]) == {"model", "messages", "stream"}
    assert sent["body"]["messages"] == [{"role": "user", "content": "What is 2+2?"}]


def test_attachments_are_described_as_text(tmp_path):
    attachments = [
        {"kind": "photo", "file_name": "cat.jpg", "mime_type": "image/jpeg", "size_bytes": 2048,
         "download_url": "http://server/secret-path"},
        {"kind": "document"},
    ]  # fmt: skip
    with FakeOpenAI() as fake:
        quick(context(tmp_path, fake.base_url, text="look", attachments=attachments))
    content = fake.completions[0]["messages"][-1]["content"]
    assert content == (
        "look\n[attachment: photo 'cat.jpg' (image/jpeg, 2048 bytes)]\n"
        "[attachment: document 'unnamed']"
    )
    assert "secret-path" not in content


def test_429_and_5xx_are_retried_with_backoff_then_answered(tmp_path):
    waits = []
    with FakeOpenAI(reply="finally", fail_first=2, fail_status=429) as fake:
        assert quick(context(tmp_path, fake.base_url), waits).text == "finally"
    assert len(fake.completions) == 3 and waits == [1.0, 2.0]
    with FakeOpenAI(reply="ok", fail_first=1, fail_status=503, retry_after=3) as fake:
        waits = []
        assert quick(context(tmp_path, fake.base_url), waits).text == "ok"
    assert waits == [3.0]  # Retry-After wins over the backoff


def test_endless_5xx_gives_a_clear_failure_without_the_key(tmp_path):
    with FakeOpenAI(fail_first=100, fail_status=500) as fake, pytest.raises(HandlerError) as caught:
        quick(context(tmp_path, fake.base_url))
    assert len(fake.completions) == 4  # MAX_TRIES, then the job fails (SPEC §6.3 retries it)
    message = str(caught.value)
    assert message == ("The model endpoint answered 500: fake failure 500 (gave up after 4 tries).")
    assert caught.value.usage == {
        "input_tokens": 0, "output_tokens": 0, "model": "openai/gpt-4o-mini"
    }  # fmt: skip


class EchoKeyFake(FakeOpenAI):
    """An endpoint whose 401 repeats the key it was given (some do)."""

    def _answer(self, body):
        return 401, {}, {"error": {"message": f"Incorrect API key provided: {KEY}. " + "x" * 500}}


def test_4xx_is_not_retried_and_its_excerpt_is_short_and_keyless(tmp_path):
    with EchoKeyFake() as fake, pytest.raises(HandlerError) as caught:
        quick(context(tmp_path, fake.base_url))
    assert len(fake.completions) == 1
    message = str(caught.value)
    assert message.startswith("The model endpoint answered 401: Incorrect API key provided: ")
    assert KEY not in message and "[redacted]" in message
    assert len(message) < 300


def test_a_slow_endpoint_times_out_within_the_budget(tmp_path):
    with FakeOpenAI(delay=1.5) as fake:
        ctx = context(tmp_path, fake.base_url, timeout_seconds=1)
        with pytest.raises(HandlerError, match=r"no answer within 1 s \(gave up after 2 tries\)"):
            llm_handler(ctx, call=ChatCall(ctx.runtime, backoff=0.01))
    # Two tries fit in the budget (2 × timeout); a third would not.
    assert len(fake.completions) == 2


def test_a_dead_endpoint_is_unreachable(tmp_path):
    with FakeOpenAI() as fake:
        url = fake.base_url
    with pytest.raises(HandlerError, match=r"unreachable \(ConnectionError\)") as caught:
        quick(context(tmp_path, url))
    assert KEY not in str(caught.value)


def test_no_model_no_text_and_not_json_are_clear_errors(tmp_path):
    with pytest.raises(HandlerError, match="needs a model"):
        quick(context(tmp_path, "http://127.0.0.1:9/v1", model=""))
    with FakeOpenAI(reply="   ") as fake, pytest.raises(HandlerError, match="no text") as caught:
        quick(context(tmp_path, fake.base_url))
    assert caught.value.usage["input_tokens"] == 11  # the failed attempt's tokens count


def test_a_reported_cost_is_the_usage_cost(tmp_path):
    usage = {"prompt_tokens": 100, "completion_tokens": 50, "cost": 0.00123}
    with FakeOpenAI(usage=usage, model="openai/gpt-4o-mini-2024") as fake:
        result = quick(context(tmp_path, fake.base_url))
    assert result.usage == {
        "input_tokens": 100, "output_tokens": 50, "cost_usd": 0.00123,
        "model": "openai/gpt-4o-mini-2024",
    }  # fmt: skip


def test_the_fake_streams_too(tmp_path):
    """The shared fake answers ``stream: true`` with SSE chunks and the usage at the end."""
    with FakeOpenAI(reply="one two three") as fake:
        response = requests.post(
            f"{fake.base_url}/chat/completions",
            json={"model": "m", "messages": [], "stream": True},
            stream=True,
            timeout=5,
        )
        events = [line.removeprefix(b"data: ") for line in response.iter_lines() if line]
    assert events[-1] == b"[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "one two three"
    assert chunks[-1]["usage"]["prompt_tokens"] == 11
    assert fake.completions[0]["stream"] is True


def test_llm_is_a_built_in():
    assert load_handler("llm") is llm_handler


# In the worker: usage on complete and fail, the key kept out of the error and the log ------
class RecordingApi:
    def __init__(self, runtime):
        self.runtime = runtime
        self.calls = []

    def hydration(self, job):
        return {"runtime": self.runtime, "conversation": {"history": []}}

    def heartbeat(self, job):
        pass

    def delivered(self, job):
        self.calls.append(("delivered",))

    def append_messages(self, job, messages):
        self.calls.append(("append", [m["content"] for m in messages]))

    def complete(self, job, usage=None, *, reply=None, history=None):
        if history:
            self.calls.append(("append", [m["content"] for m in history]))
        self.calls.append(("complete", usage))

    def fail(self, job, error, usage=None):
        self.calls.append(("fail", error, usage))


def worker(tmp_path, api):
    settings = WorkerSettings(api_url="http://x", token="t", worker_id="w", data_dir=tmp_path)
    runtime = WorkerRuntime(settings, api, None)  # the handler comes from the hydration
    runtime.restored_for = "c"
    return runtime


def job():
    return {
        "message_id": 3, "lease_id": "L", "conversation_id": "c", "agent_key": "alpha",
        "payload": {"provider": "api", "message_text": "hi"},
    }  # fmt: skip


def test_the_worker_runs_the_agents_handler_and_sends_its_usage(tmp_path):
    with FakeOpenAI(reply="hello!") as fake:
        api = RecordingApi({"handler": "llm", "model": "m1", "base_url": fake.base_url,
                            "api_key": KEY, "timeout_seconds": 5})  # fmt: skip
        assert worker(tmp_path, api).process(job()) == "done"
    assert api.calls[-2:] == [
        ("append", ["hi", "hello!"]),
        ("complete", {"input_tokens": 11, "output_tokens": 7, "model": "m1"}),
    ]


def test_a_failing_model_fails_the_job_with_usage_and_no_key_in_text_or_log(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)

    def leaky(ctx):  # a careless dotted-path handler: the worker still redacts
        raise RuntimeError(f"boom with {ctx.runtime['api_key']}")

    api = RecordingApi({"handler": "llm", "model": "m1", "api_key": KEY})
    runtime = worker(tmp_path, api)
    runtime.handler = leaky
    assert runtime.process(job()) == "failed"
    [(_, error, usage)] = api.calls
    assert error == "RuntimeError: boom with [redacted]" and usage is None
    assert KEY not in caplog.text

    with FakeOpenAI(fail_first=100, fail_status=502) as fake:
        api = RecordingApi({"handler": "llm", "model": "m1", "base_url": fake.base_url,
                            "api_key": KEY, "timeout_seconds": 1})  # fmt: skip
        # 1 s budget × 2: two tries with the 1 s backoff between them, then the job fails.
        assert worker(tmp_path, api).process(job()) == "failed"
    [(_, error, usage)] = api.calls
    assert error.startswith("The model endpoint answered 502")
    assert usage == {"input_tokens": 0, "output_tokens": 0, "model": "m1"}
    assert KEY not in caplog.text


def test_an_unknown_agent_handler_fails_the_job_clearly(tmp_path):
    api = RecordingApi({"handler": "nowhere.to.be.found"})
    assert worker(tmp_path, api).process(job()) == "failed"
    [(_, error, _usage)] = api.calls
    assert error.startswith("Unknown handler 'nowhere.to.be.found'")
