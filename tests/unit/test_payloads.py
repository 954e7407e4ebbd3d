"""Journal payloads: each kind's typed data is stored as the JSON entries have always held, and entries
written before the payloads existed read back unchanged."""

from __future__ import annotations

import pytest

from migration_core.changes.constraints import ConstraintsPayload, ForeignKey, Parked, TriggerState
from migration_core.changes.databases import ContentsPayload, DatabasePayload
from migration_core.changes.fence import FencePayload
from migration_core.changes.identity import IdentityPayload
from migration_core.changes.roles import RolesPayload
from migration_core.state.journal import Payload

STORED: list[tuple[type[Payload], dict]] = [
    (
        FencePayload,
        {
            "read_only_before": None,
            "revoked": ["PUBLIC", "app"],
            "granted_self": "",
            "ended_sessions": 2,
            "superusers": [],
        },
    ),
    (DatabasePayload, {"replaced": False, "address": "db:5432"}),
    (
        DatabasePayload,
        {"replaced": True, "replaced_oid": 16384, "address": "db:5432", "why": "--overwrite", "oid": 16390},
    ),
    (ContentsPayload, {"oid": 16384, "address": "db:5432", "public_owner": None}),
    (ContentsPayload, {"oid": 16384, "address": "db:5432", "public_owner": "dba", "public_acl": ["=U/dba"]}),
    (RolesPayload, {"roles": []}),
    (RolesPayload, {"roles": ["app"], "oids": {"app": 16500}, "memberships": [["grp", "app"]]}),
    (IdentityPayload, {"tables": {"public.t": "d"}}),
    (
        ConstraintsPayload,
        {
            "parked": {
                "foreign_keys": [
                    {"table": "public.t", "name": "t_fk", "definition": "FOREIGN KEY (a) REFERENCES u(b)"}
                ],
                "triggers": [{"table": "public.t", "name": "audit", "enabled": "O"}],
            }
        },
    ),
]


@pytest.mark.parametrize(("kind", "stored"), STORED)
def test_stored_json_reads_back_and_writes_the_same(kind: type[Payload], stored: dict) -> None:
    assert kind.from_json(stored).to_json() == stored


def test_typed_fields_read_what_was_stored() -> None:
    fence = FencePayload.from_json(STORED[0][1])
    assert fence.revoked == ["PUBLIC", "app"] and fence.ended_sessions == 2 and fence.read_only_before is None
    made = DatabasePayload.from_json({"replaced": False, "address": "db:5432"})
    assert made.oid is None and made.why is None  # pgmig stopped before reading the OID back
    parked = ConstraintsPayload.from_json(STORED[-1][1]).parked
    assert parked == Parked(
        [ForeignKey("public.t", "t_fk", "FOREIGN KEY (a) REFERENCES u(b)")], [TriggerState("public.t", "audit", "O")]
    )
    assert RolesPayload.from_json({}).roles == [] and ConstraintsPayload.from_json({}).parked == Parked([], [])
