"""Merge each service-hour-kind partition of raw uploads, exactly once."""
