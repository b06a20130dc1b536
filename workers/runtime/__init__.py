"""The reference worker (SPEC §12): talks to the server only through the worker REST API."""
