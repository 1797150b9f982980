"""Serverless entry points for the aggregator."""
