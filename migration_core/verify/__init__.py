"""Proving the target equals the source: row counts and checksums per table, checks overlapping the copy, row
digests.
"""
