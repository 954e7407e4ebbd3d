"""Foreign keys and triggers on an online target: recorded (in the journal, before anything is
touched), then dropped or disabled while changes stream in (rows arrive in commit order, not
dependency order), and reinstated at cutover exactly as they were on the source. Every operation here
is safe to repeat: a crash may interrupt any of them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import asyncpg

from migration_core.pg.sql import ident
from migration_core.state.journal import TARGET, Change, Journal, Payload

FOREIGN_KEYS = (
    "SELECT format('%I.%I', n.nspname, c.relname) AS tbl, con.conname AS name, "
    "pg_get_constraintdef(con.oid) AS definition FROM pg_constraint con "
    "JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE con.contype = 'f' AND con.conparentid = 0 AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "ORDER BY 1, 2"
)

TRIGGERS = (
    "SELECT format('%I.%I', n.nspname, c.relname) AS tbl, t.tgname AS name, t.tgenabled::text AS enabled "
    "FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE NOT t.tgisinternal AND t.tgparentid = 0 AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "ORDER BY 1, 2"
)

ENABLE = {"O": "ENABLE TRIGGER", "D": "DISABLE TRIGGER", "R": "ENABLE REPLICA TRIGGER", "A": "ENABLE ALWAYS TRIGGER"}


@dataclass
class ForeignKey:
    table: str  # already quoted: schema.table
    name: str
    definition: str  # pg_get_constraintdef, e.g. FOREIGN KEY (a) REFERENCES s.t(b)


@dataclass
class TriggerState:
    table: str
    name: str
    enabled: str  # the source's tgenabled: O, D, R or A


@dataclass
class Parked:
    """What was taken off the target, to put back at cutover."""

    foreign_keys: list[ForeignKey]
    triggers: list[TriggerState]

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Parked":
        return cls(
            [ForeignKey(**f) for f in data.get("foreign_keys", [])],
            [TriggerState(**t) for t in data.get("triggers", [])],
        )


@dataclass
class ConstraintsPayload(Payload):
    """The journal's record of the constraints parked on the target, to put back."""

    parked: Parked = field(default_factory=lambda: Parked([], []))

    @classmethod
    def from_json(cls, data: dict) -> "ConstraintsPayload":
        return cls(Parked.from_dict(data.get("parked", {})))


async def park(target: asyncpg.Connection, journal: Journal, database: str) -> Parked:
    """Record every FK and trigger on the target (journal first), drop the FKs and disable the enabled
    triggers, in one transaction."""
    fks = [ForeignKey(r["tbl"], r["name"], r["definition"]) for r in await target.fetch(FOREIGN_KEYS)]
    triggers = [TriggerState(r["tbl"], r["name"], r["enabled"]) for r in await target.fetch(TRIGGERS)]
    parked = Parked(fks, triggers)
    async with journal.change(Change.CONSTRAINTS, TARGET, database, data=ConstraintsPayload(parked)):
        await repark(target, parked)
    return parked


async def repark(target: asyncpg.Connection, parked: Parked) -> None:
    """Take the parked constraints off again (the cutover's fallback); what is already off stays off."""
    # Only what is on is touched: each ALTER locks its table, and one someone holds a lock on (the reason
    # a cutover fell back, perhaps) must not stall the fallback when there is nothing to do there.
    async with target.transaction():
        for fk in parked.foreign_keys:
            if await target.fetchval(
                "SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass($1) AND conname = $2", fk.table, fk.name
            ):
                await target.execute(f"ALTER TABLE {fk.table} DROP CONSTRAINT {ident(fk.name)}")
        for t in parked.triggers:
            if t.enabled != "D" and await target.fetchval(
                "SELECT tgenabled <> 'D' FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = $2",
                t.table,
                t.name,
            ):
                await target.execute(f"ALTER TABLE {t.table} DISABLE TRIGGER {ident(t.name)}")


async def reinstate(target: asyncpg.Connection, parked: Parked) -> None:
    """Put FKs back NOT VALID (enforced for every new row at once) and triggers as they were; VALIDATE,
    which reads the existing rows, follows later without a long lock. A foreign key already back (an
    interrupted earlier attempt) is left as it is."""
    for fk in parked.foreign_keys:
        if not await target.fetchval(
            "SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass($1) AND conname = $2", fk.table, fk.name
        ):
            await target.execute(f"ALTER TABLE {fk.table} ADD CONSTRAINT {ident(fk.name)} {fk.definition} NOT VALID")
    for t in parked.triggers:
        await target.execute(f"ALTER TABLE {t.table} {ENABLE[t.enabled]} {ident(t.name)}")


async def validate(conn: asyncpg.Connection, parked: Parked) -> list[str]:
    """VALIDATE every parked foreign key; each violation is reported, the others still validated."""
    problems = []
    for fk in parked.foreign_keys:
        try:
            await conn.execute(f"ALTER TABLE {fk.table} VALIDATE CONSTRAINT {ident(fk.name)}")
        except asyncpg.PostgresError as exc:
            problems.append(f"foreign key {fk.name} on {fk.table} does not hold: {exc}")
    return problems
