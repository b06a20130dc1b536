"""Domain errors that carry their own HTTP answer: a status and a stable code (SPEC §19).

Business code raises them; the API's exception handler (``agents.api_errors``) turns every
one into ``{"error": code, "detail": detail}`` with that status, so a view has no
``try/except`` of its own. They are plain exceptions, not DRF's: commands, admin actions and
schedules catch them like any other and show ``detail``.
"""

from __future__ import annotations


class DomainError(Exception):
    """Subclasses set ``status_code``, ``code`` and ``default_detail``."""

    status_code = 400
    code = "invalid_request"
    default_detail = "The request is not valid."

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        status_code: int | None = None,
        retry_after: int | None = None,
    ):
        self.detail = detail or self.default_detail
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        # Seconds: a throttled caller gets it in the body and in the Retry-After header.
        self.retry_after = retry_after
        super().__init__(self.detail)
