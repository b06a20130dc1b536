"""Real concurrency for the tests that race database connections (PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from django.db import connections


def run_at_once(
    target: Callable,
    args_list: Sequence[tuple],
    *,
    barrier_timeout: float | None = None,
    join_timeout: float | None = None,
) -> list:
    """Call ``target(*args)`` for each ``args`` from its own thread (so its own database
    connection), all released together by a barrier; each thread closes its connections.
    Returns the results in the order the calls finished; an exception in any thread fails
    the caller."""
    results: list = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(args_list))

    def run(args: tuple) -> None:
        try:
            barrier.wait(timeout=barrier_timeout)
            result = target(*args)
            with lock:
                results.append(result)
        except BaseException as exc:  # surfaced below
            with lock:
                errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(args,)) for args in args_list]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(join_timeout)
    assert not errors, errors
    return results
