"""Talking to PostgreSQL: configured servers and connections, SQL quoting, client tools and binaries, work
directories, secrets, failpoints.
"""
