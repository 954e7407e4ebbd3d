"""Journal payloads: each kind's typed data is stored as the JSON entries have always held, and entries
written before the payloads existed read back unchanged."""

from __future__ import annotations

import pytest

from migration_core.changes import azure
from migration_core.changes.constraints import ConstraintsPayload, ForeignKey, Parked, TriggerState
from migration_core.changes.databases import ContentsPayload, DatabasePayload
from migration_core.changes.fence import FencePayload
from migration_core.changes.identity import IdentityPayload
from migration_core.changes.roles import RolesPayload
from migration_core.changes.watermarks import VerifierObjects
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
    (
        azure.FirewallPayload,
        {"start": "10.0.0.1", "end": "10.0.0.9", "before": None, "resource_id": "", "modified_at": ""},
    ),
    (azure.ParameterPayload, {"before": "replica", "value": "logical"}),
    (
        azure.DatabasePayload,
        {
            "resource_id": "/subscriptions/x/databases/app",
            "created_at": "2026-12-07T00:00:00Z",
            "oid": 16390,
            "address": "h:5432",
        },
    ),
    (azure.RestartPayload, {"pending": ["shared_preload_libraries"]}),
    (VerifierObjects, {"schema": "pgmig_x", "oid": 16400, "publication": "pgmig_x"}),
    (
        VerifierObjects,
        {
            "schema": "pgmig_x",
            "oid": 16400,
            "publication": "",
            "covered": [["public", "t"]],
            "share": 0.5,
            "at": "2026-12-07T00:00:00+00:00",
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
    parked = ConstraintsPayload.from_json(next(d for k, d in STORED if k is ConstraintsPayload and d["parked"])).parked
    assert parked == Parked(
        [ForeignKey("public.t", "t_fk", "FOREIGN KEY (a) REFERENCES u(b)")], [TriggerState("public.t", "audit", "O")]
    )
    assert RolesPayload.from_json({}).roles == [] and ConstraintsPayload.from_json({}).parked == Parked([], [])
