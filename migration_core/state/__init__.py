"""What a migration is and may become: models, the state machine, the ledger, approvals, the journal, events,
errors, and the store that persists them.
"""
