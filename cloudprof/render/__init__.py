"""Renderers: flame graph and diff HTML, text tables. They return str, never read storage."""
