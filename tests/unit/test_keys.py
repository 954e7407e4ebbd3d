"""Which of pg_restore's entries pgmig builds itself: the keys' CONSTRAINT entries, by catalog OID, whatever
the names in the line say."""

from __future__ import annotations

from migration_core.changes.keys import Key, leave_out

LISTING = """;
; Selected TOC Entries:
;
216; 1259 16391 TABLE public pgbench_accounts postgres
3211; 2606 16406 CONSTRAINT public pgbench_accounts pgbench_accounts_pkey postgres
3213; 2606 16402 CONSTRAINT public "odd 16406" "x 2606 16406" postgres
3300; 2606 16500 FK CONSTRAINT public child child_parent_fkey postgres
3301; 0 0 COMMENT public CONSTRAINT pgbench_accounts_pkey ON pgbench_accounts postgres
3400; 1259 16406 INDEX public lookalike postgres
"""


def key(oid: int, kind: str = "p", deferrable: bool = False, deferred: bool = False) -> Key:
    return Key(oid, "public", 'we"ird table', 'the "pk"', kind, deferrable, deferred, "idx name", "CREATE …")


def test_only_the_built_keys_entries_are_left_out():
    kept = leave_out(LISTING, [key(16406)])
    assert "pgbench_accounts_pkey postgres\n" not in kept.split("COMMENT")[0]
    assert '3213; 2606 16402 CONSTRAINT public "odd 16406"' in kept  # another constraint, 16406 only in its name
    assert "3300; 2606 16500 FK CONSTRAINT" in kept and "3301; 0 0 COMMENT" in kept  # comments still restored
    assert "3400; 1259 16406 INDEX" in kept  # the same number in another catalog is another object
    assert kept.count("\n") == LISTING.count("\n") - 1


def test_the_constraint_is_attached_with_every_name_quoted():
    assert key(1).attach() == (
        'ALTER TABLE ONLY "public"."we""ird table" ADD CONSTRAINT "the ""pk""" PRIMARY KEY USING INDEX "idx name"'
    )
    assert key(1, "u", True, True).attach().endswith('UNIQUE USING INDEX "idx name" DEFERRABLE INITIALLY DEFERRED')
    assert key(1, "u", True).attach().endswith("DEFERRABLE")
