"""Cursor pagination answering ``{"results": [...], "next": url|null}`` (SPEC §15)."""

from __future__ import annotations

from rest_framework.pagination import CursorPagination
from rest_framework.response import Response


class ConsumerCursorPagination(CursorPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
    ordering = "-id"  # stable under inserts: a cursor never repeats or skips a row

    def get_paginated_response(self, data):
        return Response({"results": data, "next": self.get_next_link()})

    def get_paginated_response_schema(self, schema):
        return {
            "type": "object",
            "required": ["results", "next"],
            "properties": {
                "results": schema,
                "next": {"type": "string", "nullable": True, "format": "uri"},
            },
        }
