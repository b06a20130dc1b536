"""Pushing and templates (SPEC §14): the product layer of ``agents``. It may import
``workers`` and ``telegram``; nothing imports it (ARCHITECTURE.md)."""
