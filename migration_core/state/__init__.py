"""What a migration is and may become: models, the state machine, the ledger, approvals, the journal, events,
errors (migration_core/store/ persists them).
"""
