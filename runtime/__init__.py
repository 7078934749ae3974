"""Chronik's user-facing library: workflows, activities, the client and the replay engine."""
