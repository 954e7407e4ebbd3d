"""Every change pgmig makes on a customer's server, with its undo: databases, roles, constraints, extensions,
replication objects, sequences, materialized views, keys, verification's watermarks, schema-change capture,
a managed service's start, the changes to an Azure flexible server (firewall rules, parameters, restarts,
databases: azure.py); and cleanup.
"""
