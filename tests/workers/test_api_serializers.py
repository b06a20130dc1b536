"""The worker API's serializers bind their fields once per class (workers.api.serializers):
every request gets its own answer and its own errors all the same."""

from __future__ import annotations

import threading

from workers.api import serializers as s


def validate(serializer_class, data):
    serializer = serializer_class(data=data)
    valid = serializer.is_valid()
    return valid, (serializer.validated_data if valid else serializer.errors)


def test_fields_are_built_once_per_class_not_per_instance():
    first, second = s.LeaseSerializer(data={}), s.LeaseSerializer(data={})
    assert first.fields is second.fields
    # A subclass has its own set (its extra fields), and nested serializers theirs.
    assert set(s.CompleteSerializer(data={}).fields) == {"lease_id", "usage", "reply", "history"}
    assert set(s.LeaseSerializer(data={}).fields) == {"lease_id"}


def test_errors_and_values_stay_with_their_own_instance():
    bad = validate(s.CompleteSerializer, {"lease_id": "", "usage": {"input_tokens": -1}})
    good = validate(s.CompleteSerializer, {"lease_id": "l-1", "usage": {"input_tokens": 3}})
    assert bad[0] is False
    assert set(bad[1]) == {"lease_id", "usage"}
    assert set(bad[1]["usage"]) == {"input_tokens"}
    assert good == (
        True,
        {"lease_id": "l-1", "usage": {"input_tokens": 3, "output_tokens": 0, "model": ""}},
    )
    # The first answer is not changed by the second validation.
    assert set(bad[1]) == {"lease_id", "usage"}


def test_threads_validating_at_once_each_get_their_own_answer():
    wrong: list[tuple] = []

    def work(n: int) -> None:
        for round_ in range(200):
            lease_id = f"l-{n}-{round_}" if n % 2 else "x" * 65  # odd threads: valid bodies
            valid, answer = validate(s.LeaseSerializer, {"lease_id": lease_id})
            expected = {"lease_id": lease_id} if n % 2 else ["lease_id"]
            if valid is not bool(n % 2) or (answer if valid else list(answer)) != expected:
                wrong.append((n, round_, valid, answer))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
