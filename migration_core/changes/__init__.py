"""Every change pgmig makes on a customer's server, with its undo: databases, roles, constraints, extensions,
replication objects, sequences, materialized views, keys; and cleanup.
"""
