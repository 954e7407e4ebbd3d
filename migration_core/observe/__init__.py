"""Watching running work: progress, what a statement waits for, the server's own progress views, the online monitor,
the slot guardian.
"""
