"""Gives every request an id (the caller's ``X-Request-ID`` when it is a sane one), binds it and
the ids in the URL (message, conversation) to the log context, answers it back in the
``X-Request-ID`` header, and — with ``LOG_FORMAT=json`` — writes one access line per request."""

from __future__ import annotations

import logging
import re
import time
import uuid

from django.conf import settings

from agents import log_context

access_log = logging.getLogger("ops.access")
HEADER = "X-Request-ID"
# A caller's id is kept only if it cannot smuggle anything into a log line or a header.
SANE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")
# URL keyword arguments that name something a log reader searches for.
URL_IDS = ("message_id", "conversation_id")


def request_id_for(request) -> str:
    offered = request.headers.get(HEADER, "")
    return offered if SANE_ID.match(offered) else uuid.uuid4().hex


class RequestIdMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self.access_lines = getattr(settings, "LOG_FORMAT", "plain") == "json"

    def __call__(self, request):
        request_id = request_id_for(request)
        request.request_id = request_id
        started = time.monotonic()
        with log_context.scope(request_id=request_id):
            response = self.get_response(request)
            response[HEADER] = request_id
            if self.access_lines:
                # The path goes in the message, where the bot-token filter redacts it.
                access_log.info(
                    "%s %s %s %.1fms",
                    request.method,
                    request.path,
                    response.status_code,
                    (time.monotonic() - started) * 1000,
                )
        return response

    def process_view(self, request, view_func, view_args, view_kwargs):
        log_context.bind(**{key: view_kwargs.get(key) for key in URL_IDS})
        return None
