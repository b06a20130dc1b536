"""Reply media (SPEC §7 ``jobs/<id>/uploads/``, §22): a worker uploads its reply's files
under the live lease, names them in ``complete``, and the outbox sends them (multipart),
in order with the reply's text, with the text's retries, pauses and failures."""

from __future__ import annotations

import datetime as dt
import io

import pytest
import responses
from django.core.files.base import ContentFile
from django.utils import timezone

from agents.models import AgentProfile, ConversationEntry
from agents.secret_store import import_secret
from telegram.bot_api import TelegramApiError
from telegram.outbox_models import OutboxBot, OutboxMessage
from telegram.outbox_sender import drain_bot
from workers import reply_uploads
from workers.models import Message, ReplyUpload, Worker
from workers.reply_uploads import store_reply_upload, sweep_reply_uploads

from .test_outbox import API, FakeBot, complete, telegram_job

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
PDF = b"%PDF-1.4 a report"


class MediaBot(FakeBot):
    """FakeBot that also takes files: records (method, payload, file name, bytes)."""

    def __init__(self, answers=None):
        super().__init__(answers=answers)
        self.files: list[tuple[str, dict, str, bytes]] = []

    def send_file_once(self, method, payload, field, file_name, handle):
        assert field == method[4:].lower()  # sendPhoto → photo
        queued = self.answers.get(payload["chat_id"])
        if queued:
            raise queued.pop(0)
        self.files.append((method, dict(payload), file_name, handle.read()))
        self.sent.append((0.0, {"method": method, **payload}))
        return {"message_id": len(self.sent)}


@pytest.fixture
def leased(alpha_agent, claim_as):
    message = telegram_job()
    _, api, job = claim_as("w-media")
    assert job["message_id"] == message.pk
    return message, api, job


def upload(api, job, data=PNG, kind="photo", filename="chart.png", lease_id=None):
    lease = job["lease_id"] if lease_id is None else lease_id
    return api.post(
        f"{API}/jobs/{job['message_id']}/uploads/?lease_id={lease}&kind={kind}&filename={filename}",
        data=data,
        content_type="image/png",
    )


def stored_files() -> int:
    return sum(
        1 for u in ReplyUpload.objects.all() if u.file and u.file.storage.exists(u.file.name)
    )


def test_the_lease_holder_uploads_a_file_and_gets_an_id(leased):
    message, api, job = leased
    response = upload(api, job)
    assert response.status_code == 201, response.content
    upload_row = ReplyUpload.objects.get(pk=response.json()["upload_id"])
    assert upload_row.message_id == message.pk and upload_row.status == ReplyUpload.UPLOADED
    assert upload_row.size_bytes == len(PNG) and upload_row.file.read() == PNG
    assert upload_row.file.name.startswith("reply_uploads/") and upload_row.mime_type == "image/png"


def test_upload_by_a_worker_without_the_live_lease_is_refused(leased, make_worker, worker_api):
    _, api, job = leased
    _, other_token = make_worker("w-other", heartbeat_at=timezone.now())
    refused = upload(worker_api(other_token), job)
    assert refused.status_code == 409 and refused.json()["error"] == "lease_lost"
    assert upload(api, job, lease_id="not-the-lease").status_code == 409
    Message.objects.filter(pk=job["message_id"]).update(
        lease_expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    assert upload(api, job).status_code == 409
    assert not ReplyUpload.objects.exists() and stored_files() == 0


def test_an_oversize_file_is_413_and_nothing_is_kept(leased, monkeypatch, alpha_agent):
    message, api, job = leased
    monkeypatch.setitem(reply_uploads.MAX_BYTES, "photo", 16)
    response = upload(api, job)  # said from Content-Length, before reading
    assert response.status_code == 413 and response.json()["error"] == "too_large"
    assert "photo may be at most" in response.json()["detail"]
    # A body without a declared length is cut off while streaming; its bytes are removed.
    worker = Worker.objects.get(worker_id="w-media")
    with pytest.raises(reply_uploads.UploadError) as refused:
        store_reply_upload(
            worker,
            message.pk,
            job["lease_id"],
            kind="photo",
            file_name="a.png",
            stream=io.BytesIO(PNG),
        )
    assert refused.value.status_code == 413
    assert not ReplyUpload.objects.exists()


def test_bad_kind_missing_name_empty_file_and_too_many_uploads_are_clear_errors(
    leased, monkeypatch
):
    _, api, job = leased
    bad_kind = upload(api, job, kind="sticker")
    assert bad_kind.status_code == 400 and "kind" in bad_kind.json()["fields"]
    assert upload(api, job, filename="..").status_code == 400
    empty = upload(api, job, data=b"")
    assert empty.status_code == 400 and "empty" in empty.json()["detail"]
    assert not ReplyUpload.objects.exists()
    monkeypatch.setattr(reply_uploads, "MAX_UPLOADS_PER_JOB", 1)
    assert upload(api, job).status_code == 201
    too_many = upload(api, job)
    assert too_many.status_code == 413 and "uploads per job" in too_many.json()["detail"]


def test_complete_with_a_bad_media_reference_is_400_and_changes_nothing(
    leased, alpha_agent, make_worker, worker_api
):
    message, api, job = leased
    photo = upload(api, job).json()["upload_id"]
    # An upload of another job (another conversation, another worker).
    other = telegram_job(chat="77", conversation="conv-other")
    _, token = make_worker("w-2", heartbeat_at=timezone.now())
    other_api = worker_api(token)
    other_job = other_api.post(f"{API}/claim/", {}, format="json").json()["job"]
    assert other_job["message_id"] == other.pk
    foreign = upload(other_api, other_job).json()["upload_id"]
    history = [{"role": "assistant", "content": "x"}]
    for media in (
        [{"kind": "photo", "upload_id": 999_999}],  # unknown
        [{"kind": "photo", "upload_id": foreign}],  # another job's
        [{"kind": "document", "upload_id": photo}],  # uploaded as a photo
        [{"kind": "photo", "upload_id": photo}, {"kind": "photo", "upload_id": photo}],
        [{"kind": "sticker", "upload_id": photo}],
        [{"kind": "photo"}],
    ):
        response = complete(api, job, reply={"text": "see", "media": media}, history=history)
        assert response.status_code == 400, (media, response.content)
        assert response.json()["error"] == "invalid_request"
    assert Message.objects.get(pk=message.pk).status == Message.PROCESSING
    assert not OutboxMessage.objects.exists() and not ConversationEntry.objects.exists()
    assert set(ReplyUpload.objects.values_list("status", flat=True)) == {ReplyUpload.UPLOADED}


def test_a_compatibility_mode_agent_still_may_not_send_a_reply(leased, alpha_agent):
    _, api, job = leased
    photo = upload(api, job).json()["upload_id"]
    alpha_agent.delivery = AgentProfile.WORKER_DELIVERY
    alpha_agent.save()
    response = complete(api, job, reply={"media": [{"kind": "photo", "upload_id": photo}]})
    assert response.status_code == 400 and response.json()["error"] == "reply_not_expected"
    assert ReplyUpload.objects.get().status == ReplyUpload.UPLOADED


def test_media_are_sent_with_the_caption_in_order_once_and_their_files_swept(leased):
    message, api, job = leased
    photo = upload(api, job).json()["upload_id"]
    report = upload(api, job, data=PDF, kind="document", filename="report.pdf").json()
    reply = {
        "text": "Your **chart**",
        "media": [
            {"kind": "photo", "upload_id": photo},
            {"kind": "document", "upload_id": report["upload_id"]},
        ],
        "buttons": [[{"text": "More", "callback_data": "more"}]],
    }
    first = complete(api, job, reply=reply)
    assert first.status_code == 200, first.content
    ids = first.json()["outbox"]
    rows = list(OutboxMessage.objects.order_by("id"))
    assert [(r.media_kind, r.text, r.part, r.parts) for r in rows] == [
        ("photo", "Your <b>chart</b>", 0, 2),
        ("document", "", 1, 2),
    ]
    assert rows[1].reply_markup and not rows[0].reply_markup  # buttons under the last one
    assert set(ReplyUpload.objects.values_list("status", flat=True)) == {ReplyUpload.ATTACHED}
    # A repeated complete answers the first answer and adds nothing.
    again = complete(api, job, reply=reply)
    assert again.json() == {"status": "done", "outbox": ids}
    assert OutboxMessage.objects.count() == 2

    bot = MediaBot()
    assert drain_bot("alpha", client=bot, sleep=lambda s: None)["sent"] == 2
    assert drain_bot("alpha", client=bot, sleep=lambda s: None)["sent"] == 0
    (m1, p1, n1, b1), (m2, p2, n2, b2) = bot.files
    assert (m1, n1, b1, p1["caption"], p1["parse_mode"]) == (
        "sendPhoto",
        "chart.png",
        PNG,
        "Your <b>chart</b>",
        "HTML",
    )
    assert (m2, n2, b2, "caption" in p2) == ("sendDocument", "report.pdf", PDF, False)
    assert p2["reply_markup"] == {"inline_keyboard": [[{"text": "More", "callback_data": "more"}]]}
    assert Message.objects.get(pk=message.pk).delivered_at is not None
    assert set(ReplyUpload.objects.values_list("status", flat=True)) == {ReplyUpload.SENT}

    assert stored_files() == 2
    assert sweep_reply_uploads() == {"expired": 2}
    assert stored_files() == 0
    assert set(ReplyUpload.objects.values_list("status", flat=True)) == {ReplyUpload.EXPIRED}


def test_a_text_too_long_for_a_caption_goes_first_then_the_file(leased):
    _, api, job = leased
    photo = upload(api, job).json()["upload_id"]
    text = "word " * 300  # 1500 characters: more than a caption holds
    media = [{"kind": "photo", "upload_id": photo}]
    assert complete(api, job, reply={"text": text, "media": media}).status_code == 200
    rows = list(OutboxMessage.objects.order_by("id"))
    assert [r.media_kind for r in rows] == ["", "photo"] and rows[1].text == ""
    bot = MediaBot()
    drain_bot("alpha", client=bot, sleep=lambda s: None)
    assert [p.get("method", "sendMessage") for _, p in bot.sent] == ["sendMessage", "sendPhoto"]


def test_media_rows_share_the_retries_pauses_and_failures_of_text(leased):
    _, api, job = leased
    photo = upload(api, job).json()["upload_id"]
    complete(api, job, reply={"text": "x", "media": [{"kind": "photo", "upload_id": photo}]})
    bot = MediaBot(
        answers={
            "55": [
                TelegramApiError("sendPhoto", 429, "Too Many Requests", retry_after=5),
                TelegramApiError("sendPhoto", 502, "Bad Gateway"),
                TelegramApiError("sendPhoto", 403, "Forbidden: bot was blocked by the user"),
            ]
        }
    )
    assert drain_bot("alpha", client=bot, sleep=lambda s: None)["paused"] == 1
    assert OutboxBot.objects.get(agent_key="alpha").paused_until > timezone.now()
    OutboxBot.objects.update(paused_until=None)
    OutboxMessage.objects.update(next_attempt_at=timezone.now())
    assert drain_bot("alpha", client=bot, sleep=lambda s: None)["retry"] == 1
    OutboxMessage.objects.update(next_attempt_at=timezone.now())
    assert drain_bot("alpha", client=bot, sleep=lambda s: None)["failed"] == 1
    row = OutboxMessage.objects.get()
    assert row.status == OutboxMessage.FAILED and "blocked" in row.last_error
    assert ReplyUpload.objects.get().status == ReplyUpload.ATTACHED  # kept for a retry


def test_refused_caption_entities_are_sent_again_as_plain_text(leased):
    _, api, job = leased
    photo = upload(api, job).json()["upload_id"]
    media = [{"kind": "photo", "upload_id": photo}]
    complete(api, job, reply={"text": "**bold**", "media": media})
    bot = MediaBot(answers={"55": [TelegramApiError("sendPhoto", 400, "can't parse entities")]})
    assert drain_bot("alpha", client=bot, sleep=lambda s: None)["sent"] == 1
    method, payload, _, _ = bot.files[0]
    assert payload["caption"] == "**bold**" and "parse_mode" not in payload  # as written
    assert OutboxMessage.objects.get().sent_as_plain


def test_a_row_whose_file_expired_fails_with_the_reason(leased):
    _, api, job = leased
    photo = upload(api, job).json()["upload_id"]
    complete(api, job, reply={"media": [{"kind": "photo", "upload_id": photo}]})
    ReplyUpload.objects.update(created_at=timezone.now() - reply_uploads.RETENTION)
    assert sweep_reply_uploads() == {"expired": 1}
    assert drain_bot("alpha", client=MediaBot(), sleep=lambda s: None)["failed"] == 1
    assert "no longer stored" in OutboxMessage.objects.get().last_error


def test_the_sweep_deletes_orphans_once_their_lease_is_gone_and_keeps_live_ones(leased):
    message, api, job = leased
    upload(api, job)
    assert sweep_reply_uploads() == {"expired": 0}  # the lease holder may still attach it
    attached = ReplyUpload.objects.create(
        message=message,
        worker_id="w-media",
        lease_id="old",
        kind="photo",
        file_name="a.png",
        status=ReplyUpload.ATTACHED,
    )
    attached.file.save("a.png", ContentFile(PNG))
    assert sweep_reply_uploads() == {"expired": 0}  # attached, unsent, within retention
    # The job fails back to the queue: nothing can attach its uploads any more.
    api.post(
        f"{API}/jobs/{job['message_id']}/fail/",
        {"lease_id": job["lease_id"], "error": "boom"},
        format="json",
    )
    assert sweep_reply_uploads() == {"expired": 1}
    assert ReplyUpload.objects.get(pk=attached.pk).status == ReplyUpload.ATTACHED
    assert stored_files() == 1


def test_the_real_client_sends_the_file_as_multipart(leased, settings):
    _, api, job = leased
    photo = upload(api, job).json()["upload_id"]
    media = [{"kind": "photo", "upload_id": photo}]
    complete(api, job, reply={"text": "chart", "media": media})
    settings.TELEGRAM_API_BASE_URL = "http://telegram.test"
    import_secret("telegram.botToken.alpha", "4242:TOKEN-alpha", actor="test")
    with responses.RequestsMock() as mock:
        mock.post(
            "http://telegram.test/bot4242:TOKEN-alpha/sendPhoto",
            json={"ok": True, "result": {"message_id": 9}},
        )
        assert drain_bot("alpha", sleep=lambda s: None)["sent"] == 1
        request = mock.calls[0].request
    assert request.headers["Content-Type"].startswith("multipart/form-data")
    assert PNG in request.body and b'name="caption"' in request.body
    assert b'filename="chart.png"' in request.body
    assert OutboxMessage.objects.get().telegram_message_id == 9
