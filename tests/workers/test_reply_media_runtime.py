"""The reference worker returns files (SPEC §12, §22): the echo handler sends back the photo
it received — the worker uploads it over HTTP under its lease, completes naming it, and the
server's outbox sends it as a photo."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone

from telegram.outbox_models import OutboxMessage
from telegram.outbox_sender import drain_bot
from tests.telegram.test_outbox import telegram_job
from tests.telegram.test_reply_media import PNG, MediaBot
from workers.models import Message, MessageAttachment, ReplyUpload
from workers.runtime.api_client import ApiError, WorkerApiClient
from workers.runtime.runner import WorkerRuntime, WorkerSettings

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def photo_job(caption: str):
    message = telegram_job(text=caption)
    attachment = MessageAttachment(
        message=message,
        kind="photo",
        file_name="cat.png",
        mime_type="image/png",
        size_bytes=len(PNG),
    )
    attachment.file.save("cat.png", ContentFile(PNG))
    return message


def runtime_for(live_server, make_worker, tmp_path, worker_id="w-echo"):
    _, token = make_worker(worker_id, heartbeat_at=timezone.now())
    client = WorkerApiClient(live_server.url, token)
    settings = WorkerSettings(
        api_url=live_server.url, token=token, worker_id=worker_id, data_dir=tmp_path / worker_id
    )
    return WorkerRuntime(settings, client, None), client  # the agent's handler: echo


def test_the_echo_handler_sends_back_the_photo_it_received(
    live_server, alpha_agent, make_worker, tmp_path
):
    message = photo_job("look")
    runtime, client = runtime_for(live_server, make_worker, tmp_path)
    job = client.claim()
    assert job["message_id"] == message.pk
    assert runtime.process(job) == "done"

    assert Message.objects.get(pk=message.pk).status == Message.DONE
    upload = ReplyUpload.objects.get()
    assert (upload.kind, upload.status, upload.file.read()) == ("photo", "attached", PNG)
    row = OutboxMessage.objects.get()
    assert (row.media_kind, row.text, row.media_upload_id) == ("photo", "look", upload.pk)
    # The fetched copy lived in the scratch dir only, and is gone once sent.
    assert not list((tmp_path / "w-echo" / ".af-tmp").rglob("*cat.png"))

    bot = MediaBot()
    assert drain_bot("alpha", client=bot, sleep=lambda s: None)["sent"] == 1
    method, payload, name, data = bot.files[0]
    assert (method, payload["chat_id"], payload["caption"], data) == (
        "sendPhoto",
        "55",
        "look",
        PNG,
    )
    assert name.endswith("cat.png")
    assert Message.objects.get(pk=message.pk).delivered_at is not None


def test_the_client_upload_is_refused_without_the_lease(
    live_server, alpha_agent, make_worker, tmp_path
):
    photo_job("x")
    _, client = runtime_for(live_server, make_worker, tmp_path)
    job = client.claim()
    path = tmp_path / "a.png"
    path.write_bytes(PNG)
    assert client.upload_reply_file(job, path, "photo") > 0
    with pytest.raises(ApiError) as refused:
        client.upload_reply_file({**job, "lease_id": "stale"}, path, "photo")
    assert refused.value.status == 409 and refused.value.code == "lease_lost"
    with pytest.raises(ApiError) as bad:
        client.upload_reply_file(job, path, "sticker")
    assert bad.value.status == 400
