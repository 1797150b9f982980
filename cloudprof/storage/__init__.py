"""Object storage behind one interface: local folder, S3, GCS, memory."""
