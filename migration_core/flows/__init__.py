"""The pipelines of a whole migration (offline, online, cutover, managed); `steps/` holds what each does per
database.
"""
