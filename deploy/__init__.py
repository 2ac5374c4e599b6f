"""Serving several app processes: the supervisor behind ``--workers``, the health check, HAProxy's config."""
