"""Production settings (SPEC §23): HTTPS by default with DEBUG off, the proxy header only
when trusted, the OpenAPI schema only for staff and workers, and a clean ``check --deploy``.

The settings are read at start-up, so those tests run ``manage.py`` in a subprocess with
an environment built from nothing (the suite's own opt-outs must not leak in)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

ROOT = Path(__file__).resolve().parent.parent
KEY = "dGVzdC1rZXktMzItYnl0ZXMtbG9uZy0wMTIzNDU2Nzg="
# A production-like environment: long random key, encryption keys, https URL, real hosts.
PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": "k3T9-qZ7_vLw2Xr8pN4mA6sD1fG5hJ0cV+bY3uE9iO7tR2eW6yQ4aS8dF1gH5jK",
    "AGENT_FACTORY_ENCRYPTION_KEYS": KEY,
    "PUBLIC_BASE_URL": "https://factory.example.com",
    "ALLOWED_HOSTS": "factory.example.com",
}


def manage(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, "AGENT_FACTORY_VAR_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_in_production(tmp_path):
    result = manage(tmp_path, "check", "--deploy", **PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "System check identified no issues (0 silenced)."
    assert result.stderr == ""


def test_check_deploy_reports_exactly_the_documented_opt_outs(tmp_path):
    env = {**PRODUCTION, "SECURE_SSL_REDIRECT": "0", "SECURE_HSTS_SECONDS": "0"}
    result = manage(tmp_path, "check", "--deploy", **env)
    output = result.stdout + result.stderr
    assert "(security.W004)" in output and "(security.W008)" in output  # HSTS, redirect
    assert "System check identified 2 issues (0 silenced)." in output


SHOW = (
    "import json; from django.conf import settings as s; print(json.dumps({n: getattr(s, n) "
    "for n in ('SECURE_SSL_REDIRECT', 'SECURE_HSTS_SECONDS', 'SECURE_HSTS_INCLUDE_SUBDOMAINS', "
    "'SECURE_HSTS_PRELOAD', 'SECURE_PROXY_SSL_HEADER', 'SECURE_REDIRECT_EXEMPT')}))"
)


def show(tmp_path, **env) -> dict:
    result = manage(tmp_path, "shell", "-c", SHOW, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "env, expected",
    [
        (
            PRODUCTION,
            {
                "SECURE_SSL_REDIRECT": True,
                "SECURE_HSTS_SECONDS": 31536000,
                "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
                "SECURE_HSTS_PRELOAD": True,
                "SECURE_PROXY_SSL_HEADER": None,  # X-Forwarded-Proto is not believed
            },
        ),
        (
            {**PRODUCTION, "SECURE_SSL_REDIRECT": "0", "SECURE_HSTS_SECONDS": "0"},
            {"SECURE_SSL_REDIRECT": False, "SECURE_HSTS_SECONDS": 0},
        ),
        (
            {**PRODUCTION, "TRUST_X_FORWARDED_PROTO": "1"},
            {"SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"]},
        ),
        (
            {"DEBUG": "1"},  # scripts/run.sh: plain http on loopback, no HSTS
            {"SECURE_SSL_REDIRECT": False, "SECURE_HSTS_SECONDS": 0},
        ),
    ],
    ids=["production", "opted-out", "behind-a-trusted-proxy", "debug"],
)
def test_https_settings_from_the_environment(tmp_path, env, expected):
    values = show(tmp_path, **env)
    assert {k: values[k] for k in expected} == expected


def test_the_suite_runs_with_the_opt_outs(settings):
    assert settings.DEBUG is False
    assert settings.SECURE_SSL_REDIRECT is False and settings.SECURE_HSTS_SECONDS == 0
    assert os.environ["SECURE_SSL_REDIRECT"] == "0"  # inherited by the servers it starts


def test_redirect_and_hsts_in_action(db, settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_REDIRECT_EXEMPT = [r"^healthz/$"]
    client = Client()  # a new handler: the security middleware reads the settings again
    response = client.get("/admin/login/")
    assert response.status_code == 301
    assert response["Location"] == "https://testserver/admin/login/"
    assert client.get("/healthz/").status_code == 200  # platform health checks stay on http
    secure = client.get("/admin/login/", secure=True)
    assert secure.status_code == 200 and "max-age=31536000" in secure["Strict-Transport-Security"]
    # A forged X-Forwarded-Proto is not believed unless the proxy is trusted.
    assert client.get("/admin/login/", HTTP_X_FORWARDED_PROTO="https").status_code == 301
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert Client().get("/admin/login/", HTTP_X_FORWARDED_PROTO="https").status_code == 200


# The OpenAPI schema ---------------------------------------------------------------------


def schema(client: Client, **headers):
    return client.get("/api/schema/", HTTP_ACCEPT="application/json", **headers)


def test_schema_refuses_anonymous_and_non_staff(db, client):
    response = schema(client)
    assert response.status_code == 401 and response["WWW-Authenticate"] == "Bearer"
    assert response.json()["error"] == "unauthorized"
    assert b"/api/v1/worker/claim/" not in response.content
    user = get_user_model().objects.create_user("consumer", password="pw")
    client.force_login(user)
    assert schema(client).status_code == 403


def test_schema_refuses_a_bad_or_revoked_worker_token(db, client, make_worker):
    from workers.tokens import revoke_worker_token

    worker, token = make_worker()
    revoke_worker_token(worker)
    assert schema(client, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401
    assert schema(client, HTTP_AUTHORIZATION="Bearer wk_nope_nope").status_code == 401


def test_schema_for_staff_and_workers(db, client, admin_client, make_worker):
    _, token = make_worker()
    for response in (schema(admin_client), schema(client, HTTP_AUTHORIZATION=f"Bearer {token}")):
        assert response.status_code == 200
        body = response.json()
        assert "/api/v1/worker/claim/" in body["paths"]
        # The worker token is documented as the API's security scheme.
        assert body["components"]["securitySchemes"]["workerToken"]["scheme"] == "bearer"
