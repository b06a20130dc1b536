"""The consumer API's OpenAPI details: every operation documents the §19 error answers."""

from __future__ import annotations

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter

from agents.consumer_api.serializers import ErrorSerializer

ERRORS = {
    "400": "Validation failed: `fields` names each bad field.",
    "401": "No Api-Key header, or an unknown, expired or revoked key.",
    "403": "A write with a read-only key.",
    "404": "Not found, or outside this key's tenant or agents.",
    "409": "A conflict: `idempotency_conflict`, or the queue refused the message.",
    "429": "Too many requests for this key: `retry_after` seconds.",
}


IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    description="Optional. A repeat within 24 h answers the first answer again; the same key "
    "with a different body answers 409 idempotency_conflict.",
)


class ConsumerAutoSchema(AutoSchema):
    def get_override_parameters(self):
        parameters = super().get_override_parameters()
        if self.method == "POST":
            parameters = [*parameters, IDEMPOTENCY_KEY]
        return parameters

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        error = self._get_response_for_code(ErrorSerializer, "400")
        for code, description in ERRORS.items():
            if code not in responses:
                responses[code] = {**error, "description": description}
        return responses
