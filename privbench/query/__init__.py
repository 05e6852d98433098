"""Querying a released model: per-example and per-token signals that black-box attacks and utility
read."""
