"""Schema changes made on an online migration's source while it streams: captured there, gated on the target
at the very point of the stream where they were made, applied or skipped as the team decides (issue 26).

Logical replication carries no DDL. On the source, an event trigger (`ddl_command_end` and `sql_drop`) records
each statement of any session but pgmig's own — its command tag, the objects it touched, `current_query()`,
the session's search_path — as a row of a `ddl` table in pgmig's verification schema (watermarks.py), and
that table is published with the migration's tables: the row reaches the target in commit order with the
data. On the target, an `ENABLE ALWAYS` trigger on its copy looks the statement's id up in `ddl_decision`
(written by `decide`): `apply` runs it inside the apply worker's own transaction, before any later row that
needs it (of a query string that held more than schema statements, only those: the decision carries them);
`skip` lets it pass; no decision yet raises, so the apply worker retries and replication waits
exactly there — its lag shows it — until the team decides. A statement that fails on the target is recorded
as failed with its error and the stream goes on (the monitor then says what blocks, if anything does).

An event trigger needs a superuser: `possible` says whether pgmig may make one; otherwise the monitor falls
back to drift detection (observe/ddl.py). Capture is journaled (Change.DDL_CAPTURE) before anything is made,
target first (its gate must exist before the first captured row can arrive), and its undo drops only pgmig's
event triggers, functions and tables, before the verification schema's own undo drops the schema.

A table created while streaming is published once its CREATE ran on the target (`publish`): logical replication
then copies its rows and streams the rest. A table dropped on the source leaves the publication by itself. pgmig
killed between the publication and the subscription's refresh (failpoint `ddl-published:DATABASE`) finishes it at
the next look: `publish` is idempotent, and the watch records a table as published only once it returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import asyncpg

from migration_core.changes import watermarks
from migration_core.pg import failpoints
from migration_core.pg.servers import ServerConfig
from migration_core.pg.sql import ident, literal
from migration_core.state.journal import SOURCE, TARGET, Change, Journal, JournalEntry, Mark, Payload

CAPTURED, DECISIONS = "ddl", "ddl_decision"
RECORD, CAPTURE, GATE = "pgmig_record_ddl", "pgmig_capture_ddl", "pgmig_gate_ddl"
EVENTS = ("ddl_command_end", "sql_drop")
SAFE_PATH = "SET search_path = pg_catalog, pg_temp"
# one row per statement: the parts of a statement seen by both events (ALTER TABLE … DROP COLUMN) are merged
SOURCE_COLUMNS = (
    "id bigserial PRIMARY KEY, xid bigint NOT NULL, stmt_at timestamptz NOT NULL, query_md5 text NOT NULL, "
    "tag text NOT NULL, objects text[] NOT NULL, statement text NOT NULL, search_path text NOT NULL, "
    "role text NOT NULL, UNIQUE (xid, stmt_at, query_md5)"
)
TARGET_COLUMNS = (
    "id bigint PRIMARY KEY, xid bigint, stmt_at timestamptz, query_md5 text, tag text, objects text[], "
    "statement text, search_path text, role text"
)
DECISION_COLUMNS = (
    "id bigint PRIMARY KEY, decision text NOT NULL CHECK (decision IN ('apply', 'skip')), statement text, "
    "reason text, "
    "decided_by text NOT NULL, decided_at timestamptz NOT NULL DEFAULT now(), outcome text, error text, "
    "done_at timestamptz"
)
# The event trigger's own function runs as its owner but must read the caller's search_path, which a SET
# clause would hide: it only passes it on, through fully qualified calls, to the recorder, whose path is fixed.
CAPTURE_BODY = "BEGIN PERFORM {schema}.{record}(pg_catalog.current_setting('search_path'), TG_EVENT, TG_TAG); END"
RECORD_BODY = """
DECLARE
  objs text[];
  q text := current_query();
BEGIN
  IF current_setting('application_name') = 'pgmig' OR tag = 'REFRESH MATERIALIZED VIEW' THEN RETURN; END IF;
  IF event = 'sql_drop' THEN
    SELECT array_agg(object_type || ' ' || object_identity) INTO objs FROM pg_event_trigger_dropped_objects()
     WHERE original AND NOT is_temporary AND schema_name IS DISTINCT FROM {name};
  ELSE
    SELECT array_agg(object_type || ' ' || object_identity) INTO objs FROM pg_event_trigger_ddl_commands()
     WHERE NOT in_extension AND schema_name IS DISTINCT FROM {name}
       AND coalesce(schema_name NOT LIKE 'pg\\_temp%', true);
  END IF;
  IF objs IS NULL THEN RETURN; END IF;
  BEGIN
    INSERT INTO {schema}.{captured} AS d (xid, stmt_at, query_md5, tag, objects, statement, search_path, role)
    VALUES (txid_current(), statement_timestamp(), md5(q), tag, objs, q, path, session_user)
    ON CONFLICT (xid, stmt_at, query_md5) DO UPDATE SET objects = d.objects || EXCLUDED.objects;
  EXCEPTION WHEN OTHERS THEN  -- the customer's statement goes on; the monitor's column check still sees it
    RAISE WARNING 'pgmig could not record this schema change (%): %', tag, SQLERRM;
  END;
END
"""
GATE_BODY = """
DECLARE
  d record;
  stmt text;
BEGIN
  SELECT decision, statement INTO d FROM {schema}.{decisions} WHERE id = NEW.id;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'pgmig: schema change % (%) awaits a decision: /pgmig ddl … apply % or skip %',
      NEW.id, NEW.tag, NEW.id, NEW.id;
  END IF;
  IF d.decision = 'apply' THEN
    stmt := coalesce(d.statement, NEW.statement);  -- the schema statements alone, of a string that held more
    IF NEW.tag IN ('CREATE INDEX', 'DROP INDEX', 'REINDEX') THEN  -- no CONCURRENTLY inside a transaction
      stmt := regexp_replace(stmt, '\\s+CONCURRENTLY\\M', '', 'i');
    END IF;
    BEGIN
      PERFORM set_config('search_path', NEW.search_path, true);  -- the function's SET puts it back
      EXECUTE stmt;
      UPDATE {schema}.{decisions} SET outcome = 'applied', error = NULL, done_at = clock_timestamp()
       WHERE id = NEW.id;
    EXCEPTION WHEN OTHERS THEN
      UPDATE {schema}.{decisions} SET outcome = 'failed', error = SQLERRM, done_at = clock_timestamp()
       WHERE id = NEW.id;
    END;
  ELSE
    UPDATE {schema}.{decisions} SET outcome = 'skipped', done_at = clock_timestamp() WHERE id = NEW.id;
  END IF;
  RETURN NULL;
END
"""


# a new table may be published only if the source can still replicate its updates and deletes then
NEW_TABLE = """
SELECT n.nspname, c.relname, c.relreplident = 'f' OR EXISTS (
         SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid
            AND (i.indisprimary AND c.relreplident = 'd' OR i.indisreplident AND c.relreplident = 'i')) AS keyed
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = to_regclass($1) AND c.relkind IN ('r', 'p') AND c.relpersistence = 'p'
"""
SUBSCRIBED = (
    "SELECT 1 FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid "
    "WHERE s.subname = $1 AND r.srrelid = to_regclass($2)"
)


@dataclass
class CaptureObjects(Payload):
    """What capture made on one side: in which schema (its OID, to drop only in the very schema pgmig made),
    on the source the publication the ddl table was added to, the event triggers' names, and the tables
    created while streaming that pgmig added to the publication (dropping the publication takes them) and let
    the subscription's login (`reader`) read, for their first copy (revoked here, or its DROP ROLE fails)."""

    schema: str = ""
    oid: int | None = None
    publication: str = ""
    triggers: list[str] = field(default_factory=list)
    published: list[str] = field(default_factory=list)
    reader: str = ""


def trigger_names(schema: str) -> list[str]:
    """The source's event triggers (database-wide names, not in a schema): named after pgmig's schema."""
    return [f"{schema[:50]}_{event}"[:63] for event in EVENTS]


async def possible(conn: asyncpg.Connection) -> bool:
    """Whether pgmig's login may create event triggers (PostgreSQL: superusers only)."""
    return bool(await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))


async def ensure(source: ServerConfig, target: ServerConfig, database: str, journal: Journal) -> str | None:
    """Make (or find made) capture on both sides, after the verification schema it lives in; returns the
    schema's name, or None when the migration no longer streams (nothing is made). Idempotent: a restart
    finishes what its entries planned."""
    schema = await watermarks.ensure(source, target, database, journal)
    if schema is None:
        return None
    made = [await journal.find(Change.DDL_CAPTURE, side, database, schema) for side in (TARGET, SOURCE)]
    if all(e is not None and e.mark is Mark.DONE for e in made):
        return schema
    if not await watermarks.streaming(journal):
        return None
    async with target.connection(database) as tgt:
        entry = await journal.plan(Change.DDL_CAPTURE, TARGET, database, schema, CaptureObjects(schema))
        oid = await _make_target(tgt, schema)
        await journal.done(entry, CaptureObjects(schema, oid))
    publication, triggers = journal.object_name(database), trigger_names(schema)
    planned = CaptureObjects(schema, None, publication, triggers)
    entry = await journal.plan(Change.DDL_CAPTURE, SOURCE, database, schema, planned)
    async with source.connection(database) as src:
        oid = await _publish_table(src, schema, publication)
    await journal.note(entry, CaptureObjects(schema, oid, publication, triggers))
    # the subscription learns of the table before the first statement is recorded: none is lost on the way
    async with target.connection(database) as tgt:
        await tgt.execute(f"ALTER SUBSCRIPTION {ident(publication)} REFRESH PUBLICATION WITH (copy_data = false)")
    async with source.connection(database) as src:
        await _make_triggers(src, schema, triggers)
    await journal.done(entry, CaptureObjects(schema, oid, publication, triggers))
    return schema


async def _make_target(conn: asyncpg.Connection, schema: str) -> int:
    s = ident(schema)
    async with conn.transaction():
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {s}.{CAPTURED} ({TARGET_COLUMNS})")
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {s}.{DECISIONS} ({DECISION_COLUMNS})")
        body = GATE_BODY.replace("{schema}", s).replace("{decisions}", DECISIONS)
        await conn.execute(
            f"CREATE OR REPLACE FUNCTION {s}.{GATE}() RETURNS trigger LANGUAGE plpgsql {SAFE_PATH} AS {literal(body)}"
        )
        await conn.execute(f"DROP TRIGGER IF EXISTS {GATE} ON {s}.{CAPTURED}")
        await conn.execute(
            f"CREATE TRIGGER {GATE} AFTER INSERT ON {s}.{CAPTURED} FOR EACH ROW EXECUTE FUNCTION {s}.{GATE}()"
        )
        await conn.execute(f"ALTER TABLE {s}.{CAPTURED} ENABLE ALWAYS TRIGGER {GATE}")
        return await conn.fetchval("SELECT oid FROM pg_namespace WHERE nspname = $1", schema) or 0


async def _publish_table(conn: asyncpg.Connection, schema: str, publication: str) -> int:
    s = ident(schema)
    async with conn.transaction():
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {s}.{CAPTURED} ({SOURCE_COLUMNS})")
        if not await watermarks.published(conn, publication, schema, CAPTURED):
            await conn.execute(f"ALTER PUBLICATION {ident(publication)} ADD TABLE {s}.{CAPTURED}")
        return await conn.fetchval("SELECT oid FROM pg_namespace WHERE nspname = $1", schema) or 0


async def _make_triggers(conn: asyncpg.Connection, schema: str, triggers: list[str]) -> None:
    s = ident(schema)
    record = RECORD_BODY.replace("{schema}", s).replace("{captured}", CAPTURED).replace("{name}", literal(schema))
    capture = CAPTURE_BODY.replace("{schema}", s).replace("{record}", RECORD)
    async with conn.transaction():
        await conn.execute(
            f"CREATE OR REPLACE FUNCTION {s}.{RECORD}(path text, event text, tag text) RETURNS void "
            f"LANGUAGE plpgsql SECURITY DEFINER {SAFE_PATH} AS {literal(record)}"
        )
        await conn.execute(f"REVOKE ALL ON FUNCTION {s}.{RECORD}(text, text, text) FROM PUBLIC")
        await conn.execute(
            f"CREATE OR REPLACE FUNCTION {s}.{CAPTURE}() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER "
            f"AS {literal(capture)}"
        )
        for name, event in zip(triggers, EVENTS, strict=True):
            await conn.execute(f"DROP EVENT TRIGGER IF EXISTS {ident(name)}")
            await conn.execute(f"CREATE EVENT TRIGGER {ident(name)} ON {event} EXECUTE FUNCTION {s}.{CAPTURE}()")


async def _revoke(conn: asyncpg.Connection, made: CaptureObjects) -> None:
    """Take back the subscription's login's reading of the tables published while streaming (those still there)."""
    if not made.reader or not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", made.reader):
        return
    for table in made.published:
        if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
            await conn.execute(f"REVOKE SELECT ON TABLE {table} FROM {ident(made.reader)}")


async def publish(source: ServerConfig, target: ServerConfig, database: str, table: str, journal: Journal) -> str:
    """A table created on the source while streaming (`table`: its identity as captured), once its CREATE ran
    on the target: added to the migration's publication (journaled in the source's capture entry first; no
    undo of its own, the publication's drop takes it), readable by the subscription's own login, and the
    subscription refreshed with copy_data, so the rows written before it was published are copied and the
    later ones stream. Idempotent, from what the servers say. Returns why it was not published, or "" once
    it is."""
    publication = journal.object_name(database)
    entry = await journal.find(Change.DDL_CAPTURE, SOURCE, database, publication)
    if entry is None:
        return "schema-change capture is not made in this database"
    logins = [e.name for e in await journal.entries(Change.REPLICATION_ROLE, database) if e.server == SOURCE]
    reader = logins[0] if logins else ""  # none: the subscription logs in as pgmig's own login, which may read
    async with target.connection(database) as tgt:
        if not await tgt.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
            return f"{table} is not on the target"
    async with source.connection(database) as src:
        found = await src.fetchrow(NEW_TABLE, table)
        if found is None:
            return f"{table} is no longer a table pgmig can publish on the source (dropped, temporary or unlogged)"
        if not found["keyed"]:
            return (
                f"{table} has no primary key (nor replica identity): published, the source would refuse its "
                "updates and deletes — give it a primary key on the source, or copy it at cutover yourself"
            )
        name = f"{ident(found['nspname'])}.{ident(found['relname'])}"
        made = CaptureObjects.of(entry)
        if name not in made.published or made.reader != reader:
            published = made.published if name in made.published else [*made.published, name]
            await journal.note(entry, replace(made, published=published, reader=reader))
        if reader:
            await src.execute(f"GRANT SELECT ON TABLE {name} TO {ident(reader)}")
        if not await watermarks.published(src, publication, found["nspname"], found["relname"]):
            await src.execute(f"ALTER PUBLICATION {ident(publication)} ADD TABLE {name}")
    failpoints.reached(f"ddl-published:{database}")  # published, the subscription not refreshed yet
    async with target.connection(database) as tgt:
        if not await tgt.fetchval(SUBSCRIBED, publication, table):
            await tgt.execute(f"ALTER SUBSCRIPTION {ident(publication)} REFRESH PUBLICATION WITH (copy_data = true)")
    return ""


async def decide(
    conn: asyncpg.Connection, schema: str, change: int, verb: str, actor: str, reason: str, runs: str | None = None
) -> bool:
    """The team's decision on one captured statement, written on the target where its gate reads it (`runs`:
    what applying runs instead of the captured text, observe/ddl_kinds.applied); False when it was decided
    already (the first decision stands: two racing clicks cannot both win)."""
    return bool(
        await conn.fetchval(
            f"INSERT INTO {ident(schema)}.{DECISIONS} (id, decision, statement, reason, decided_by) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING RETURNING true",
            change,
            verb,
            runs,
            reason or None,
            actor,
        )
    )


async def drop(server: ServerConfig, entry: JournalEntry, journal: Journal) -> str:
    """Undo one side: pgmig's event triggers, functions and tables in the schema pgmig made (same OID); the
    schema itself is the verification schema's undo, which follows."""
    made = CaptureObjects.of(entry)
    async with watermarks.owned_schema(server, entry, journal, made.schema, made.oid) as owned:
        if owned is None:
            return ""
        conn, _ = owned
        s = ident(made.schema)
        async with conn.transaction():
            if entry.server == SOURCE:
                for name in made.triggers:
                    await conn.execute(f"DROP EVENT TRIGGER IF EXISTS {ident(name)}")
                await _revoke(conn, made)
                if made.publication and await watermarks.published(conn, made.publication, made.schema, CAPTURED):
                    await conn.execute(f"ALTER PUBLICATION {ident(made.publication)} DROP TABLE {s}.{CAPTURED}")
                await conn.execute(f"DROP FUNCTION IF EXISTS {s}.{CAPTURE}()")
                await conn.execute(f"DROP FUNCTION IF EXISTS {s}.{RECORD}(text, text, text)")
            else:
                await conn.execute(f"DROP TABLE IF EXISTS {s}.{DECISIONS}")
            await conn.execute(f"DROP TABLE IF EXISTS {s}.{CAPTURED}")
            if entry.server == TARGET:
                await conn.execute(f"DROP FUNCTION IF EXISTS {s}.{GATE}()")
    await journal.undone(entry)
    return f"dropped the schema-change capture ({made.schema}) on the {entry.server} in {entry.database}"
