"""The in-process agent: samplers, windows, uploader, life cycle."""
