"""``agent-factory-worker`` (``workers.runtime.cli``) and ``manage.py run_worker``, its thin
wrapper: the same flags and exit codes; the wrapper only adds the server's defaults."""

from __future__ import annotations

import argparse

import pytest
import responses

from tests.workers.test_runtime_loop import API, WORKER_TOKEN, worker_env  # noqa: F401
from workers.management.commands.run_worker import Command
from workers.runtime import cli
from workers.runtime.runner import EXIT_CONFIG, EXIT_OK, EXIT_UNAUTHORIZED


def _flags(parser) -> set[str]:
    return {
        flag
        for action in parser._actions
        for flag in action.option_strings
        if flag not in ("--help", "-h")
    }


def test_the_wrapper_has_exactly_the_programs_flags():
    program = argparse.ArgumentParser()
    cli.add_arguments(program)
    wrapper = Command().create_parser("manage.py", "run_worker")
    django_own = {"--version", "-v", "--verbosity", "--settings", "--pythonpath", "--traceback"}
    django_own |= {"--no-color", "--force-color", "--skip-checks"}
    assert _flags(wrapper) - django_own == _flags(program)
    assert "--telegram-api-base-url" in _flags(program)


def test_telegram_base_url_the_worker_setting_then_the_servers(monkeypatch, settings):
    monkeypatch.delenv("AGENT_FACTORY_TELEGRAM_API_BASE_URL", raising=False)
    settings.TELEGRAM_API_BASE_URL = "http://sandbox.test/tg"

    def parse(args):  # defaults are read when the parser is built
        return Command().create_parser("manage.py", "run_worker").parse_args(args)

    assert parse([]).telegram_api_base_url == "http://sandbox.test/tg"  # as before: the server's
    program = argparse.ArgumentParser()
    cli.add_arguments(program)
    assert program.parse_args([]).telegram_api_base_url == "https://api.telegram.org"
    monkeypatch.setenv("AGENT_FACTORY_TELEGRAM_API_BASE_URL", "http://other.test")
    assert parse([]).telegram_api_base_url == "http://other.test"


def test_program_exit_2_without_a_data_dir_or_with_a_bad_telegram_url(worker_env, capsys):  # noqa: F811 (the imported fixture)
    args = worker_env[:-2]  # without --data-dir: the program has no server to pick one
    assert cli.main(args) == EXIT_CONFIG
    assert "agent-factory-worker needs --data-dir" in capsys.readouterr().err
    assert cli.main([*worker_env, "--telegram-api-base-url", "tg.test"]) == EXIT_CONFIG
    assert "--telegram-api-base-url must be an http(s) URL." in capsys.readouterr().err


def test_program_exit_2_for_a_bad_flag(worker_env, capsys):  # noqa: F811 (the imported fixture)
    with pytest.raises(SystemExit) as info:
        cli.main([*worker_env, "--poll-seconds", "soon"])
    assert info.value.code == EXIT_CONFIG
    assert "'soon' is not a number of seconds" in capsys.readouterr().err


@responses.activate
def test_program_exit_3_and_0_like_the_wrapper(worker_env, capsys):  # noqa: F811 (the imported fixture)
    responses.get(f"{API}/skills/manifest/", status=401, json={"error": "unauthorized"})
    responses.post(f"{API}/control/", status=401, json={"error": "unauthorized"})
    assert cli.main(worker_env) == EXIT_UNAUTHORIZED
    err = capsys.readouterr().err
    assert "refused this worker's token (401)" in err and WORKER_TOKEN not in err
    responses.replace(responses.GET, f"{API}/skills/manifest/", json={"skills": []})
    responses.replace(responses.POST, f"{API}/control/", json={"should_stop": True})
    assert cli.main(worker_env) == EXIT_OK
