"""Push templates and message templates of the key's tenant (SPEC §14, §15), through
``agents.pushing.template_services`` (the admin and commands call the same functions).

A template belongs to the tenant (every key of the tenant sees it) or to one of its agents
(only keys that see that agent do). A key narrowed to some agents changes only its agents'
templates: the tenant's are shared by keys it must not affect.
"""

from __future__ import annotations

from django.db.models import Q
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.response import Response

from agents.consumer_api.idempotency import idempotent
from agents.consumer_api.serializers_templates import (
    MessageTemplateSerializer,
    MessageTemplateWriteSerializer,
    PushTemplateSerializer,
    PushTemplateWriteSerializer,
)
from agents.consumer_api.views_agents import bool_param
from agents.consumer_api.views_base import ConsumerView, json_object, row_id
from agents.consumer_api.views_identity import actor
from agents.pushing.models import MessageTemplate, PushTemplate
from agents.pushing.services import PushError
from agents.pushing.template_services import (
    TemplateError,
    delete_template,
    save_message_template,
    save_push_template,
)

PK = OpenApiParameter("id", int, OpenApiParameter.PATH, description="The template's id.")
SLUG = OpenApiParameter("slug", str, OpenApiParameter.PATH, description="The template's slug.")


def refused(exc: PushError):
    field = exc.field if isinstance(exc, TemplateError) else "non_field_errors"
    return serializers.ValidationError({field: [str(exc)]})


class TemplateView(ConsumerView):
    model = PushTemplate

    def narrowed(self) -> bool:
        return self.api_key.agents.exists()

    def visible(self):
        rows = self.model.objects.select_related("agent").filter(tenant_id=self.api_key.tenant_id)
        if self.narrowed():
            rows = rows.filter(Q(agent__isnull=True) | Q(agent__in=self.agents()))
        return rows

    def get_queryset(self):
        return self.model.objects.none()

    def writable(self, template):
        if template.agent_id is None and self.narrowed():
            raise exceptions.PermissionDenied(
                "This key is narrowed to some agents: it changes only their templates, "
                "not the tenant's."
            )
        return template

    def agent_key_in_scope(self, agent_key: str | None) -> str | None:
        """The template's agent: one in scope (else 404); none only for a whole-tenant key."""
        if agent_key:
            return self.agent_or_404(agent_key).agent_key
        if self.narrowed():
            raise serializers.ValidationError(
                {"agent_key": ["A key narrowed to some agents must name one of them."]}
            )
        return None

    def list_filters(self, request, rows):
        enabled = bool_param(request, "enabled")
        if enabled is not None:
            rows = rows.filter(enabled=enabled)
        agent_key = request.query_params.get("agent_key")
        if agent_key:
            rows = rows.filter(agent__agent_key=agent_key)
        return rows


LIST_PARAMETERS = [
    OpenApiParameter("enabled", bool, description="Only enabled (true) or disabled (false)."),
    OpenApiParameter("agent_key", str, description="Only the templates of this agent."),
]


class PushTemplateView(TemplateView):
    serializer_class = PushTemplateSerializer
    ordering_fields = ["id", "key", "updated_at"]

    def save(self, template, data) -> dict:
        agent_key = self.agent_key_in_scope(data.get("agent_key"))
        try:
            template = save_push_template(
                template,
                actor=actor(self.api_key),
                key=data["key"],
                title=data.get("title", ""),
                text=data["text"],
                periodicity=data["periodicity"],
                suggested_times=data.get("suggested_times") or [],
                enabled=data["enabled"],
                tenant=self.api_key.tenant,
                agent_key=agent_key,
            )
        except PushError as exc:
            raise refused(exc)
        return PushTemplateSerializer(template).data

    def template_or_404(self, pk: str) -> PushTemplate:
        template = None
        if row_id(pk) is not None:
            template = self.visible().filter(pk=row_id(pk)).first()
        if template is None:
            raise Http404("Push template not found.")
        return template


class PushTemplateList(PushTemplateView):
    @extend_schema(
        parameters=LIST_PARAMETERS,
        responses=PushTemplateSerializer(many=True),
        summary="Push templates of the key's tenant",
    )
    def get(self, request):
        return self.paginated(self.list_filters(request, self.visible()), PushTemplateSerializer)

    @extend_schema(
        request=PushTemplateWriteSerializer,
        responses={201: PushTemplateSerializer},
        summary="Create a push template",
    )
    def post(self, request):
        body = PushTemplateWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return idempotent(request, self.api_key, lambda: (201, self.save(None, body.data)))


class PushTemplateDetail(PushTemplateView):
    @extend_schema(parameters=[PK], responses=PushTemplateSerializer, summary="A push template")
    def get(self, request, pk):
        return Response(PushTemplateSerializer(self.template_or_404(pk)).data)

    @extend_schema(
        parameters=[PK],
        request=PushTemplateWriteSerializer(partial=True),
        responses=PushTemplateSerializer,
        summary="Change a push template (jobs made from it keep their copy)",
    )
    def patch(self, request, pk):
        template = self.writable(self.template_or_404(pk))
        current = {
            "key": template.key,
            "agent_key": template.agent.agent_key if template.agent else None,
            "title": template.title,
            "text": template.text,
            "periodicity": template.periodicity,
            "suggested_times": template.suggested_times,
            "enabled": template.enabled,
        }
        body = PushTemplateWriteSerializer(data={**current, **json_object(request)})
        body.is_valid(raise_exception=True)
        return Response(self.save(template, body.data))

    @extend_schema(parameters=[PK], responses={204: None}, summary="Delete a push template")
    def delete(self, request, pk):
        delete_template(self.writable(self.template_or_404(pk)), actor=actor(self.api_key))
        return Response(status=204)


class MessageTemplateView(TemplateView):
    model = MessageTemplate
    serializer_class = MessageTemplateSerializer
    ordering_fields = ["id", "slug", "usage_count", "updated_at"]

    def save(self, template, data) -> dict:
        agent_key = self.agent_key_in_scope(data.get("agent_key"))
        try:
            template = save_message_template(
                template,
                actor=actor(self.api_key),
                title=data["title"],
                text=data["text"],
                tags=data.get("tags"),
                enabled=data["enabled"],
                tenant=self.api_key.tenant,
                agent_key=agent_key,
            )
        except PushError as exc:
            raise refused(exc)
        return MessageTemplateSerializer(template).data

    def template_or_404(self, slug: str) -> MessageTemplate:
        template = self.visible().filter(slug=slug).first()
        if template is None:
            raise Http404(f"Message template '{slug}' not found.")
        return template


class MessageTemplateList(MessageTemplateView):
    @extend_schema(
        parameters=[
            *LIST_PARAMETERS,
            OpenApiParameter("tag", str, description="Only templates with this tag."),
        ],
        responses=MessageTemplateSerializer(many=True),
        summary="Message templates of the key's tenant (?ordering=-usage_count: most used)",
    )
    def get(self, request):
        rows = self.list_filters(request, self.visible())
        tag = (request.query_params.get("tag") or "").strip().lower()
        if tag:
            # JSON containment is not on SQLite: the tag list is short, filter on the slugs.
            tagged = [pk for pk, tags in rows.values_list("pk", "tags") if tag in (tags or [])]
            rows = rows.filter(pk__in=tagged)
        return self.paginated(rows, MessageTemplateSerializer)

    @extend_schema(
        request=MessageTemplateWriteSerializer,
        responses={201: MessageTemplateSerializer},
        summary="Create a message template (its slug comes from the title)",
    )
    def post(self, request):
        body = MessageTemplateWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return idempotent(request, self.api_key, lambda: (201, self.save(None, body.data)))


class MessageTemplateDetail(MessageTemplateView):
    @extend_schema(parameters=[SLUG], responses=MessageTemplateSerializer)
    def get(self, request, slug):
        return Response(MessageTemplateSerializer(self.template_or_404(slug)).data)

    @extend_schema(
        parameters=[SLUG],
        request=MessageTemplateWriteSerializer(partial=True),
        responses=MessageTemplateSerializer,
        summary="Change a message template (a new title gives a new slug)",
    )
    def patch(self, request, slug):
        template = self.writable(self.template_or_404(slug))
        current = {
            "title": template.title,
            "text": template.text,
            "tags": template.tags,
            "agent_key": template.agent.agent_key if template.agent else None,
            "enabled": template.enabled,
        }
        body = MessageTemplateWriteSerializer(data={**current, **json_object(request)})
        body.is_valid(raise_exception=True)
        return Response(self.save(template, body.data))

    @extend_schema(parameters=[SLUG], responses={204: None}, summary="Delete a message template")
    def delete(self, request, slug):
        delete_template(self.writable(self.template_or_404(slug)), actor=actor(self.api_key))
        return Response(status=204)
