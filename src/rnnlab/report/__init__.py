"""Collect run records into tables."""
