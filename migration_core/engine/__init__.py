"""The engine: the API handlers call (api.py), its settings and the context every flow gets, the scheduler."""
