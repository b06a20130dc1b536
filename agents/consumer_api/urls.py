"""Routes of the consumer API under /api/v1/ (SPEC §15's table)."""

from django.urls import path

from agents.consumer_api import views_agents as agents
from agents.consumer_api import views_conversations as conversations
from agents.consumer_api import views_identity as identity
from agents.consumer_api import views_push as push
from agents.consumer_api import views_templates as templates

app_name = "consumer_api"

urlpatterns = [
    path("agents/", agents.AgentList.as_view(), name="agents"),
    path("agents/<str:agent_key>/", agents.AgentDetail.as_view(), name="agent"),
    path("agents/<str:agent_key>/readiness/", agents.AgentReadiness.as_view(), name="readiness"),
    path("users/<str:consumer_user_id>/agents/", agents.UserAgents.as_view(), name="user-agents"),
    path("users/<str:consumer_user_id>/overview/", agents.UserOverview.as_view(), name="overview"),
    path(
        "users/<str:consumer_user_id>/agents/<str:agent_key>/messages/",
        conversations.SendToUserAgent.as_view(),
        name="send",
    ),
    path(
        "users/<str:consumer_user_id>/agents/<str:agent_key>/stats/",
        agents.UserAgentStats.as_view(),
        name="user-agent-stats",
    ),
    path("pairings/", identity.PairingCreate.as_view(), name="pairings"),
    path("pairings/<str:code>/", identity.PairingDetail.as_view(), name="pairing"),
    path("bindings/", identity.BindingCreate.as_view(), name="bindings"),
    path("bindings/resolve/", identity.BindingResolve.as_view(), name="binding-resolve"),
    path("bindings/<str:pk>/", identity.BindingDetail.as_view(), name="binding"),
    path(
        "conversations/<str:conversation_id>/",
        conversations.ConversationDetail.as_view(),
        name="conversation",
    ),
    path(
        "conversations/<str:conversation_id>/messages/",
        conversations.ConversationMessages.as_view(),
        name="conversation-messages",
    ),
    path("usage/", conversations.UsageView.as_view(), name="usage"),
    path("snapshots/", conversations.SnapshotList.as_view(), name="snapshots"),
    path("push-templates/", templates.PushTemplateList.as_view(), name="push-templates"),
    path("push-templates/<str:pk>/", templates.PushTemplateDetail.as_view(), name="push-template"),
    path("message-templates/", templates.MessageTemplateList.as_view(), name="message-templates"),
    path(
        "message-templates/<str:slug>/",
        templates.MessageTemplateDetail.as_view(),
        name="message-template",
    ),
    path("push-jobs/", push.PushJobList.as_view(), name="push-jobs"),
    path("push-jobs/<str:pk>/", push.PushJobDetail.as_view(), name="push-job"),
    path("push-jobs/<str:pk>/trigger/", push.PushJobTrigger.as_view(), name="push-job-trigger"),
    path("broadcasts/", push.BroadcastCreate.as_view(), name="broadcasts"),
    path("broadcasts/<str:pk>/", push.BroadcastDetail.as_view(), name="broadcast"),
]
