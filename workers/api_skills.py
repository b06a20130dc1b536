from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response

from agents.api_errors import error_response
from agents.skills import CHANNELS, SkillError, build_manifest
from workers.api.views import WorkerView


class SkillsManifestView(WorkerView):
    @extend_schema(
        parameters=[OpenApiParameter("channel", str), OpenApiParameter("workspace_id", str)],
        responses={200: dict},
    )
    def get(self, request):
        channel = request.query_params.get("channel", "stable")
        if channel not in CHANNELS:
            return error_response("invalid_request", "channel must be stable or canary.", 400)
        workspace = request.query_params.get("workspace_id", "default")[:100]
        try:
            return Response(build_manifest(channel, workspace))
        except SkillError as exc:
            return error_response("conflict", str(exc), 409)
