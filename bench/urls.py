"""The app's URLs plus baselines measured in the same run as the real endpoints."""

from django.http import JsonResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt
from rest_framework.response import Response

from agents.models import AuditEvent
from workers.api.views import WorkerView


@csrf_exempt
def baseline_insert(request):
    """The least a webhook can do: parse nothing, insert one row, answer JSON."""
    AuditEvent.objects.create(actor="bench", action="bench.baseline")
    return JsonResponse({"ok": True})


class TrivialAuthenticated(WorkerView):
    """The cost of an authenticated worker-API request that does no work."""

    def post(self, request):
        return Response({})


urlpatterns = [
    path("bench/baseline/", baseline_insert),
    path("bench/trivial/", TrivialAuthenticated.as_view()),
    path("", include("config.urls")),
]
