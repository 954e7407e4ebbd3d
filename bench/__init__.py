"""Benchmark: ways of copying a PostgreSQL database between two local clusters (`make bench`)."""
