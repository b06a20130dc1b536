from agents.secret_store import get_active_secret_value, import_secret


def test_secret_round_trip(db):
    import_secret("demo.token", "s3cr3t-value", actor="test")
    assert get_active_secret_value("demo.token") == "s3cr3t-value"
