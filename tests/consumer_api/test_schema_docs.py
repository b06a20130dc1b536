"""The served schema documents every consumer API field and parameter, with examples."""

from __future__ import annotations

import pytest

from agents.consumer_api.schema_fields import consumer_components, is_scalar

pytestmark = pytest.mark.django_db


@pytest.fixture
def schema(world, make_key, api):
    response = api(make_key().key).get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    return response.json()


def consumer_operations(schema):
    for path, item in schema["paths"].items():
        if path.startswith("/api/v1/") and not path.startswith("/api/v1/worker/"):
            for method, operation in item.items():
                if isinstance(operation, dict) and "responses" in operation:
                    yield path, method, operation


def test_every_consumer_field_has_a_description_and_an_example(schema):
    components = schema["components"]["schemas"]
    names = consumer_components(schema)
    assert {"MessageTemplate", "PushTemplate", "UserAgentStats", "Send"} <= set(names)
    missing = [
        f"{name}.{field}"
        for name in names
        for field, prop in components[name].get("properties", {}).items()
        if not prop.get("description") or (is_scalar(prop) and "example" not in prop)
    ]
    assert missing == []
    assert components["Send"]["properties"]["variables"]["example"] == {"name": "Ada"}


def test_every_parameter_is_documented_and_in_its_path(schema):
    problems = []
    for path, method, operation in consumer_operations(schema):
        for parameter in operation.get("parameters", []):
            where = f"{method.upper()} {path} {parameter['name']}"
            if not parameter.get("description"):
                problems.append(f"{where}: no description")
            if parameter["in"] == "path" and "{" + parameter["name"] + "}" not in path:
                problems.append(f"{where}: not in the path")  # was "pk" next to "{id}"
            enum = parameter.get("schema", {}).get("enum")
            if enum and parameter.get("example") not in enum:
                problems.append(f"{where}: example outside its enum")
    assert problems == []


def test_the_new_operations_are_served(schema):
    paths = schema["paths"]
    assert set(paths["/api/v1/push-templates/{id}/"]) >= {"get", "patch", "delete"}
    assert set(paths["/api/v1/message-templates/{slug}/"]) >= {"get", "patch", "delete"}
    assert "get" in paths["/api/v1/users/{consumer_user_id}/agents/{agent_key}/stats/"]
