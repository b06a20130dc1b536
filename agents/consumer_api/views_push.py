"""Push jobs and broadcasts through ``agents.pushing.services`` (SPEC §14, §15).

A job is in a key's scope when its agent is; a broadcast when all its agents are.
"""

from __future__ import annotations

from django.db import transaction
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from agents.audit import record_audit
from agents.consumer_api.idempotency import idempotent
from agents.consumer_api.serializers_push import (
    BroadcastCreatedSerializer,
    BroadcastCreateSerializer,
    BroadcastSerializer,
    PushDispatchSerializer,
    PushJobSerializer,
    PushJobWriteSerializer,
)
from agents.consumer_api.views_base import ConsumerView, json_object, row_id
from agents.consumer_api.views_identity import actor
from agents.pushing.models import PushBroadcast, PushJob
from agents.pushing.services import (
    PushError,
    TemplateError,
    broadcast_counts,
    save_push_job,
    send_broadcast,
    trigger_push_job,
)

# Django's ``<pk>`` is ``{id}`` in the schema: the override must use that name (a "pk" path
# parameter would be one the path does not have).
JOB_ID = OpenApiParameter("id", int, OpenApiParameter.PATH, description="The push job's id.")
BROADCAST_ID = OpenApiParameter(
    "id", int, OpenApiParameter.PATH, description="The broadcast's id."
)


def refused(exc: PushError):
    field = exc.field if isinstance(exc, TemplateError) else "non_field_errors"
    return serializers.ValidationError({field: [str(exc)]})


class PushJobView(ConsumerView):
    serializer_class = PushJobSerializer

    def jobs(self):
        return PushJob.objects.select_related("agent", "source_template").filter(
            tenant_id=self.api_key.tenant_id, agent__in=self.agents()
        )

    def job_or_404(self, pk: str) -> PushJob:
        job = self.jobs().filter(pk=row_id(pk)).first() if row_id(pk) is not None else None
        if job is None:
            raise Http404("Push job not found.")
        return job

    def save(self, job, data: dict) -> PushJob:
        self.agent_or_404(data["agent_key"])
        try:
            return save_push_job(
                job,
                actor=actor(self.api_key),
                text=data.get("text", ""),
                periodicity=data["periodicity"],
                timezone_name=data["timezone"],
                schedule=data.get("schedule") or {},
                consumer_user_id=data.get("consumer_user_id", ""),
                agent_key=data["agent_key"],
                target=data["target"],
                title=data.get("title", ""),
                enabled=data["enabled"],
                template_key=data.get("template_key") or None,
                tenant=self.api_key.tenant,
            )
        except PushError as exc:
            raise refused(exc)


class PushJobList(PushJobView):
    @extend_schema(
        parameters=[
            OpenApiParameter("consumer_user_id", str),
            OpenApiParameter("agent_key", str),
        ],
        responses=PushJobSerializer(many=True),
        summary="Push jobs of agents in scope",
    )
    def get(self, request):
        jobs = self.jobs()
        for name, field in (
            ("consumer_user_id", "consumer_user_id"),
            ("agent_key", "agent__agent_key"),
        ):
            if request.query_params.get(name):
                jobs = jobs.filter(**{field: request.query_params[name]})
        return self.paginated(jobs, PushJobSerializer)

    @extend_schema(request=PushJobWriteSerializer, responses={201: PushJobSerializer})
    def post(self, request):
        body = PushJobWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return idempotent(
            request,
            self.api_key,
            lambda: (201, PushJobSerializer(self.save(None, body.validated_data)).data),
        )


class PushJobDetail(PushJobView):
    @extend_schema(parameters=[JOB_ID])
    def get(self, request, pk):
        return Response(PushJobSerializer(self.job_or_404(pk)).data)

    @extend_schema(
        parameters=[JOB_ID],
        request=PushJobWriteSerializer(partial=True),
        responses=PushJobSerializer,
    )
    def patch(self, request, pk):
        job = self.job_or_404(pk)
        current = {
            "target": job.target,
            "consumer_user_id": job.consumer_user_id,
            "agent_key": job.agent.agent_key,
            "title": job.title,
            "text": job.text,
            "periodicity": job.periodicity,
            "timezone": job.timezone,
            "schedule": job.schedule,
            "enabled": job.enabled,
        }
        body = PushJobWriteSerializer(data={**current, **json_object(request)})
        body.is_valid(raise_exception=True)
        return Response(PushJobSerializer(self.save(job, body.validated_data)).data)

    @extend_schema(
        parameters=[JOB_ID],
        responses={204: None},
    )
    def delete(self, request, pk):
        job = self.job_or_404(pk)
        with transaction.atomic():
            record_audit(actor(self.api_key), "push_job.delete", job)
            job.delete()
        return Response(status=204)


class PushJobTrigger(PushJobView):
    @extend_schema(
        parameters=[JOB_ID],
        request=None,
        responses={202: PushDispatchSerializer},
        summary="Send a job now (once per minute at most)",
    )
    def post(self, request, pk):
        job = self.job_or_404(pk)
        return idempotent(request, self.api_key, lambda: self.trigger(job))

    def trigger(self, job):
        try:
            row = trigger_push_job(job, actor=actor(self.api_key))
        except PushError as exc:
            raise refused(exc)
        answer = {
            "run_key": row.run_key,
            "status": row.status,
            "message_id": row.message_id,
            "error": row.error,
        }
        return 202, PushDispatchSerializer(answer).data


class BroadcastCreate(ConsumerView):
    serializer_class = BroadcastCreateSerializer

    @extend_schema(responses={202: BroadcastCreatedSerializer}, summary="Broadcast a text")
    def post(self, request):
        return self.idempotent_write(request, self.send)

    def send(self, data):
        keys = data.get("agent_keys")
        if keys:
            keys = [self.agent_or_404(key).agent_key for key in keys]
        else:
            keys = list(self.agents().filter(enabled=True).values_list("agent_key", flat=True))
            if not keys:
                raise serializers.ValidationError({"agent_keys": ["No enabled agent in scope."]})
        try:
            broadcast = send_broadcast(
                data["text"],
                actor=actor(self.api_key),
                agent_keys=keys,
                title=data.get("title", ""),
                tenant=self.api_key.tenant,
            )
        except PushError as exc:
            raise refused(exc)
        answer = {"broadcast_id": broadcast.pk, "targets": broadcast.total_targets}
        return 202, BroadcastCreatedSerializer(answer).data


class BroadcastDetail(ConsumerView):
    serializer_class = BroadcastSerializer

    @extend_schema(parameters=[BROADCAST_ID])
    def get(self, request, pk):
        broadcast = None
        if row_id(pk) is not None:
            broadcast = PushBroadcast.objects.filter(pk=row_id(pk)).first()
        scope = set(self.agents().values_list("agent_key", flat=True))
        if (
            broadcast is None
            or broadcast.tenant_id != self.api_key.tenant_id
            or not broadcast.agent_keys
            or not set(broadcast.agent_keys) <= scope
        ):
            raise Http404("Broadcast not found.")
        broadcast.counts = broadcast_counts(broadcast)
        return Response(BroadcastSerializer(broadcast).data)
