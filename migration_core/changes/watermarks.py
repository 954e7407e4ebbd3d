"""The objects continuous verification needs on an online migration's servers, and their undo.

On the source, a watermark table in a schema of pgmig's own (named like the migration's slot), published
with the migration's tables, so each watermark row reaches the target in commit order with the data. On
the target, its copy, a table of results, and an `ENABLE ALWAYS` trigger on the copy: inside the apply
worker's own transaction, when a watermark arrives, it takes the digest of the key range the row names —
the target exactly as the source was at that watermark's commit (Netflix DBLog's watermarks, 2020). The
trigger builds its query from the row's identifiers (quoted) and bounds (parameters): a watermark row
never carries SQL. It renders rows under the settings pgmig's data sessions use (servers.RENDERING), so
equal rows give equal text on both sides.

The schema's comment marks it as pgmig's (pg/sql.py's PGMIG_SCHEMA_MARK): no copy, check or count of the
customer's data sees it. Both sides are journaled (Change.VERIFIER) before anything is made, with the
schema's OID once made: the undo drops only the objects in the very schema pgmig created, and the schema
only when nothing else was put in it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import asyncpg

from migration_core.pg import failpoints
from migration_core.pg.servers import ConnectionProblem, ServerConfig
from migration_core.pg.sql import PGMIG_SCHEMA_MARK, ident, literal
from migration_core.state.journal import SOURCE, TARGET, Change, Journal, JournalEntry, Mark, Payload
from migration_core.state.models import State

WATERMARKS, DIGESTS, TRIGGER = "watermark", "digest", "pgmig_take_digest"
ROW_HASH = "hashtextextended(t::text, 0)"  # a row's hash (alias t): summed, a digest; bounded, a keyless range
WATERMARK_COLUMNS = (
    "id bigint PRIMARY KEY, chunk bigint NOT NULL, phase text NOT NULL, nspname text NOT NULL, "
    "relname text NOT NULL, keycol text, lo text, hi text, rows jsonb"
)
# rows, the content's digest and the tuple versions' digest (which moves whenever a row in the range is
# written, even back to an earlier value) of one key range, as the target had it when a watermark arrived;
# for a keyless table sieved in one scan, `parts`: {part: [rows, digest, versions]} of its non-empty parts
DIGEST_COLUMNS = (
    "chunk bigint NOT NULL, phase text NOT NULL, rows bigint, digest numeric, versions numeric, "
    "problem text, parts jsonb, PRIMARY KEY (chunk, phase)"
)
PARTS_COLUMN = "parts jsonb"  # added to a digest table an earlier pgmig made without it (renew)
RENDERING_CLAUSES = (
    "SET search_path = pg_catalog, pg_temp SET \"DateStyle\" = 'ISO, YMD' SET \"IntervalStyle\" = 'postgres' "
    "SET extra_float_digits = 3 SET bytea_output = 'hex' SET \"TimeZone\" = 'UTC'"
)
TRIGGER_BODY = """
DECLARE
  rel regclass := to_regclass(format('%I.%I', NEW.nspname, NEW.relname));
  keytype text;
  cond text := 'true';
  scope text;
  cols text;
  n bigint; d numeric; v numeric; found jsonb;
BEGIN
  IF NEW.phase = 'F' THEN  -- the cutover's fence: its arrival is all that counts
    RETURN NULL;
  END IF;
  IF rel IS NULL THEN
    INSERT INTO {schema}.{digests} VALUES (NEW.chunk, NEW.phase, NULL, NULL, NULL, 'no such table');
    RETURN NULL;
  END IF;
  IF NEW.keycol IS NOT NULL THEN
    SELECT format_type(atttypid, atttypmod) INTO keytype FROM pg_attribute
     WHERE attrelid = rel AND attname = NEW.keycol AND NOT attisdropped;
    IF NEW.lo IS NOT NULL THEN cond := cond || format(' AND t.%I >= $1::%s', NEW.keycol, keytype); END IF;
    IF NEW.hi IS NOT NULL THEN cond := cond || format(' AND t.%I < $2::%s', NEW.keycol, keytype); END IF;
  ELSE  -- a table without a key: a part of its rows by their hash
    IF NEW.lo IS NOT NULL THEN cond := cond || ' AND {row_hash} >= $1::bigint'; END IF;
    IF NEW.hi IS NOT NULL THEN cond := cond || ' AND {row_hash} < $2::bigint'; END IF;
  END IF;
  scope := CASE WHEN (SELECT relkind FROM pg_class WHERE oid = rel) = 'p' THEN '' ELSE 'ONLY ' END;
  IF NEW.keycol IS NULL AND NEW.phase IN ('L', 'H') AND (NEW.rows->>'shift') IS NOT NULL THEN
    -- a keyless table sieved: every part of its rows by hash (hash >> shift) in one scan, each with its rows,
    -- content digest and tuple versions' digest; only the parts that have rows
    EXECUTE format('SELECT coalesce(sum(n), 0), coalesce(jsonb_object_agg(b, jsonb_build_array(n, d, v)), ''{}'') '
                   'FROM (SELECT h >> %s AS b, count(*) AS n, sum(h)::text AS d, '
                   'sum(hashtextextended(ctid::text || xmin::text, 0))::text AS v '
                   'FROM (SELECT {row_hash} AS h, t.ctid, t.xmin FROM %s%s t) s GROUP BY 1) g',
                   (NEW.rows->>'shift')::int, scope, rel)
      INTO n, found;
    INSERT INTO {schema}.{digests} (chunk, phase, rows, problem, parts) VALUES (NEW.chunk, NEW.phase, n, NULL, found)
      ON CONFLICT (chunk, phase) DO UPDATE SET rows = EXCLUDED.rows, parts = EXCLUDED.parts, problem = NULL;
    RETURN NULL;
  END IF;
  IF NEW.phase = 'R' THEN  -- a repair: the range becomes the source's rows as of this watermark's commit
    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO cols FROM pg_attribute
     WHERE attrelid = rel AND attnum > 0 AND NOT attisdropped AND attgenerated = '';
    EXECUTE format('DELETE FROM %s%s t WHERE %s', scope, rel, cond) USING NEW.lo, NEW.hi;
    EXECUTE format('INSERT INTO %s (%s) SELECT %s FROM jsonb_populate_recordset(NULL::%s, $1)', rel, cols, cols, rel)
      USING NEW.rows;
  END IF;
  -- the high watermark needs only the tuple versions: unchanged since the low one, so is the content
  EXECUTE format('SELECT count(*), %s, '
                 'coalesce(sum(hashtextextended(t.ctid::text || t.xmin::text, 0)), 0) FROM %s%s t WHERE %s',
                 CASE WHEN NEW.phase = 'H' THEN 'NULL::numeric'
                      ELSE 'coalesce(sum({row_hash}), 0)' END,
                 scope, rel, cond)
    INTO n, d, v USING NEW.lo, NEW.hi;
  INSERT INTO {schema}.{digests} VALUES (NEW.chunk, NEW.phase, n, d, v, NULL)
    ON CONFLICT (chunk, phase) DO UPDATE SET rows = EXCLUDED.rows, digest = EXCLUDED.digest,
      versions = EXCLUDED.versions, problem = NULL;
  RETURN NULL;
END
"""


@dataclass
class VerifierObjects(Payload):
    """The schema pgmig made for verification on one side (its OID once made) and, on the source, the
    publication it added the watermark table to, and what verification has proven so far
    (verify/continuous.py: the covered tables, their share of the rows, when it last grew) and where the walk
    is (the table it is on, the low key of its first range not compared equal yet, in which pass), so that a
    restart walks on from there."""

    SPARSE = ("covered", "share", "at", "walking", "passes")

    schema: str = ""
    oid: int | None = None
    publication: str = ""
    covered: list[list[str]] = field(default_factory=list)
    share: float | None = None
    at: str = ""
    walking: list[str] = field(default_factory=list)  # [schema, table] or [schema, table, key]
    passes: int = 0


def schema_name(journal: Journal, database: str) -> str:
    """The verification schema of one of a migration's databases: the name of its slot, on both sides."""
    return journal.object_name(database)


async def streaming(journal: Journal) -> bool:
    """Whether the migration still streams, read afresh: a look that began before a cancel or the cutover's
    teardown must not make again, behind that teardown, what it just removed."""
    m = await journal.store.get_migration(journal.migration_id)
    return m is not None and m.state in (State.CATCHING_UP, State.READY_FOR_CUTOVER, State.AWAITING_APPROVAL)


async def ensure(source: ServerConfig, target: ServerConfig, database: str, journal: Journal) -> str | None:
    """Make (or find made) both sides' objects; returns the schema's name, or None when the migration no
    longer streams (nothing is made). Idempotent: a restart that died half way finishes what its entries
    planned."""
    schema = schema_name(journal, database)
    made_target = await journal.find(Change.VERIFIER, TARGET, database, schema)
    made_source = await journal.find(Change.VERIFIER, SOURCE, database, schema)
    if all(e is not None and e.mark is Mark.DONE for e in (made_target, made_source)):
        return schema
    if not await streaming(journal):
        return None
    async with target.connection(database) as tgt:
        entry = await journal.plan(Change.VERIFIER, TARGET, database, schema, VerifierObjects(schema))
        oid = await _make_target(tgt, schema)
        await journal.done(entry, VerifierObjects(schema, oid))
    async with source.connection(database) as src:
        publication = journal.object_name(database)
        entry = await journal.plan(
            Change.VERIFIER, SOURCE, database, schema, VerifierObjects(schema, None, publication)
        )
        oid = await _make_source(src, schema, publication)
        await journal.note(entry, VerifierObjects(schema, oid, publication))
    async with target.connection(database) as tgt:  # the subscription learns of the published watermark table
        await tgt.execute(f"ALTER SUBSCRIPTION {ident(publication)} REFRESH PUBLICATION WITH (copy_data = false)")
    await journal.done(entry, VerifierObjects(schema, oid, publication))
    return schema


async def renew(target: ServerConfig, database: str, journal: Journal) -> None:
    """The target's trigger function redefined as this pgmig takes digests, and its results table given the
    columns they need (one made by an earlier pgmig may not sieve a keyless table), in the very schema the
    journal says pgmig made."""
    schema = schema_name(journal, database)
    entry = await journal.find(Change.VERIFIER, TARGET, database, schema)
    if entry is None or entry.mark is not Mark.DONE:
        return
    async with target.connection(database) as tgt, tgt.transaction():
        if await _schema_oid(tgt, schema) == VerifierObjects.of(entry).oid:
            s = ident(schema)
            await tgt.execute(f"ALTER TABLE {s}.{DIGESTS} ADD COLUMN IF NOT EXISTS {PARTS_COLUMN}")
            await _define_trigger(tgt, s)


async def _schema_oid(conn: asyncpg.Connection, schema: str) -> int | None:
    return await conn.fetchval("SELECT oid FROM pg_namespace WHERE nspname = $1", schema)


async def _make_target(conn: asyncpg.Connection, schema: str) -> int:
    s = ident(schema)
    async with conn.transaction():
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
        await conn.execute(f"REVOKE ALL ON SCHEMA {s} FROM PUBLIC")
        await conn.execute(f"COMMENT ON SCHEMA {s} IS {literal(PGMIG_SCHEMA_MARK)}")
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {s}.{WATERMARKS} ({WATERMARK_COLUMNS})")
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {s}.{DIGESTS} ({DIGEST_COLUMNS})")
        await _define_trigger(conn, s)
        await conn.execute(f"DROP TRIGGER IF EXISTS {TRIGGER} ON {s}.{WATERMARKS}")
        await conn.execute(
            f"CREATE TRIGGER {TRIGGER} AFTER INSERT ON {s}.{WATERMARKS} FOR EACH ROW EXECUTE FUNCTION {s}.{TRIGGER}()"
        )
        await conn.execute(f"ALTER TABLE {s}.{WATERMARKS} ENABLE ALWAYS TRIGGER {TRIGGER}")
        return await _schema_oid(conn, schema) or 0


async def _define_trigger(conn: asyncpg.Connection, s: str) -> None:
    """The target's trigger function, in schema `s` (quoted)."""
    body = TRIGGER_BODY.replace("{schema}", s).replace("{digests}", DIGESTS).replace("{row_hash}", ROW_HASH)
    await conn.execute(
        f"CREATE OR REPLACE FUNCTION {s}.{TRIGGER}() RETURNS trigger LANGUAGE plpgsql {RENDERING_CLAUSES} "
        f"AS {literal(body)}"
    )


async def _make_source(conn: asyncpg.Connection, schema: str, publication: str) -> int:
    s = ident(schema)
    async with conn.transaction():
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
        await conn.execute(f"REVOKE ALL ON SCHEMA {s} FROM PUBLIC")
        await conn.execute(f"COMMENT ON SCHEMA {s} IS {literal(PGMIG_SCHEMA_MARK)}")
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {s}.{WATERMARKS} ({WATERMARK_COLUMNS})")
        if not await published(conn, publication, schema, WATERMARKS):
            await conn.execute(f"ALTER PUBLICATION {ident(publication)} ADD TABLE {s}.{WATERMARKS}")
        return await _schema_oid(conn, schema) or 0


async def mark(
    conn: asyncpg.Connection,
    schema: str,
    watermark: int,
    chunk: int,
    phase: str,
    table: tuple[str, str],
    key: str | None,
    lo: str | None,
    hi: str | None,
    shift: int | None = None,
) -> None:
    """One watermark row on the source, committed on its own (the session must not be in a transaction).
    `shift`: a keyless table sieved, each part's digests taken (its rows by `hash >> shift`)."""
    await conn.execute(
        f"INSERT INTO {ident(schema)}.{WATERMARKS} VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)",
        watermark,
        chunk,
        phase,
        table[0],
        table[1],
        key,
        lo,
        hi,
        None if shift is None else f'{{"shift": {int(shift)}}}',
    )


async def fence_mark(conn: asyncpg.Connection, schema: str, watermark: int) -> None:
    """The cutover's watermark, written once the source is fenced: when the target has it, it has every
    change committed on the source before it (one apply worker applies them in commit order). It names
    the watermark table itself, so a trigger made by an earlier pgmig takes a small digest and moves on.
    Committed synchronously: flushed at once, with every commit before it, for the walsender to send."""
    async with conn.transaction():
        await conn.execute("SET LOCAL synchronous_commit = on")
        await conn.execute(
            f"INSERT INTO {ident(schema)}.{WATERMARKS} VALUES ($1, $1, 'F', $2, $3, NULL, NULL, NULL, NULL)",
            watermark,
            schema,
            WATERMARKS,
        )


async def arrived(conn: asyncpg.Connection, schema: str, watermark: int) -> bool:
    """Whether a watermark has been applied on the target (its row is visible there)."""
    return bool(await conn.fetchval(f"SELECT 1 FROM {ident(schema)}.{WATERMARKS} WHERE id = $1", watermark))


async def applied(conn: asyncpg.Connection, slot: str, positions: list[str]) -> set[str]:
    """Of the source's WAL `positions`, those the slot's subscriber confirmed (applied and flushed there)."""
    found = await conn.fetchval(
        "SELECT array_agg(p) FROM unnest($2::text[]) p JOIN pg_replication_slots s ON s.slot_name = $1 "
        "WHERE s.confirmed_flush_lsn >= p::pg_lsn",
        slot,
        positions,
    )
    return set(found or [])


async def lost(conn: asyncpg.Connection, schema: str, journal: Journal, database: str) -> str:
    """Why the target applied watermarks without their trigger taking digests, in words (its copy of the
    watermark table not part of the subscription, which skips its changes; the trigger disabled), and the
    subscription refreshed when it lacks the table — only pgmig's own: its journal entry live, and
    subscribed to pgmig's publication of that name (a namesake made by someone else is left be)."""
    subscription = journal.object_name(database)  # the subscription and the publication share the name
    table = f"{ident(schema)}.{WATERMARKS}"
    subscribed = await conn.fetchval(
        "SELECT srsubstate::text FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid "
        "WHERE s.subname = $1 AND r.srrelid = to_regclass($2)",
        subscription,
        table,
    )
    made = await journal.find(Change.SUBSCRIPTION, TARGET, database, subscription)
    ours = (
        made is not None
        and made.live
        and await conn.fetchval(
            "SELECT $1 = ANY(subpublications) FROM pg_subscription "
            "WHERE subname = $1 AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
            subscription,
        )
    )
    enabled = await conn.fetchval(
        "SELECT tgenabled::text FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = $2", table, TRIGGER
    )
    said = f"the target's {table} is {'in state ' + subscribed if subscribed else 'not'} in subscription "
    said += f"{subscription}, its trigger {'enabled ' + enabled if enabled else 'missing'}"
    if subscribed is None and ours:  # nothing to journal or undo: the table joins pgmig's subscription (`ensure`)
        await conn.execute(f"ALTER SUBSCRIPTION {ident(subscription)} REFRESH PUBLICATION WITH (copy_data = false)")
        failpoints.reached(f"refreshed:{subscription}")
        said += "; the subscription was refreshed"
    return said


def range_condition(key: str | None, keytype: str | None, lo: str | None, hi: str | None) -> tuple[str, list[str]]:
    """A key range (without a key: a range of the rows' hashes) as a WHERE condition on alias `t` and its
    parameters (bounds as text, cast to the key's type), as the target's trigger builds it."""
    cond, args = ["true"], []
    subject, cast = (f"t.{ident(key)}", keytype) if key is not None else (ROW_HASH, "bigint")
    for bound, op in ((lo, ">="), (hi, "<")):
        if bound is not None:
            args.append(bound)
            cond.append(f"{subject} {op} ${len(args)}::text::{cast}")
    return " AND ".join(cond), args


async def repair(
    conn: asyncpg.Connection,
    schema: str,
    watermark: int,
    chunk: int,
    table: tuple[str, str],
    only: str,
    key: str | None,
    keytype: str | None,
    lo: str | None,
    hi: str | None,
) -> tuple[int, float]:
    """Send a range's rows to the target: the table locked against writers (SHARE, for the moment of one
    read) so that the rows read and the watermark carrying them are one state of the source; the target's
    trigger replaces its range with them where the watermark arrives in the stream, so every change
    committed before is under them and every change after applies on top. Returns the rows sent and how long
    writers to the table waited (the lock held: one read, a scan of the whole table for a keyless part)."""
    label = f"{ident(table[0])}.{ident(table[1])}"
    where, args = range_condition(key, keytype, lo, hi)
    async with conn.transaction():
        await conn.execute("SET LOCAL lock_timeout = '5s'")  # writers wait behind the lock: never for long
        await conn.execute(f"LOCK TABLE {only}{label} IN SHARE MODE")
        locked = time.monotonic()
        found = await conn.fetchrow(
            f"SELECT count(*) AS n, coalesce(jsonb_agg(to_jsonb(t)), '[]'::jsonb)::text AS rows "
            f"FROM {only}{label} t WHERE {where}",
            *args,
        )
        await conn.execute(
            f"INSERT INTO {ident(schema)}.{WATERMARKS} VALUES ($1, $2, 'R', $3, $4, $5, $6, $7, $8::jsonb)",
            watermark,
            chunk,
            table[0],
            table[1],
            key,
            lo,
            hi,
            found["rows"],
        )
    return found["n"], time.monotonic() - locked


async def forget(conn: asyncpg.Connection, schema: str, chunks: list[int]) -> None:
    """The target's results of ranges pgmig has judged, removed (pgmig's own table)."""
    if chunks:
        await conn.execute(f"DELETE FROM {ident(schema)}.{DIGESTS} WHERE chunk = ANY($1::bigint[])", chunks)


@asynccontextmanager
async def owned_schema(
    server: ServerConfig, entry: JournalEntry, journal: Journal, schema: str, oid: int | None
) -> AsyncIterator[tuple[asyncpg.Connection, int] | None]:
    """For an undo in pgmig's schema: a connection to the entry's database and the schema's OID, or None
    (the entry closed: nothing of pgmig's is there) when the database or the schema is gone, or the schema
    of that name is another than the one pgmig made."""
    try:
        conn = await server.connect(entry.database)
    except ConnectionProblem as exc:
        if not exc.missing_database:
            raise
        await journal.undone(entry)  # its database is gone, and the schema with it
        yield None
        return
    try:
        found = await _schema_oid(conn, schema)
        if found is None or (oid is not None and found != oid):
            await journal.undone(entry)
            yield None
        else:
            yield conn, found
    finally:
        await conn.close()


async def published(conn: asyncpg.Connection, publication: str, schema: str, table: str) -> bool:
    """Whether `schema.table` is in the publication already."""
    return bool(
        await conn.fetchval(
            "SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
            publication,
            schema,
            table,
        )
    )


async def drop(server: ServerConfig, entry: JournalEntry, journal: Journal) -> str:
    """Undo one side: the objects in the schema pgmig made (the same OID), then the schema if it is empty."""
    made = VerifierObjects.of(entry)
    async with owned_schema(server, entry, journal, made.schema, made.oid) as owned:
        if owned is None:
            return ""
        conn, oid = owned
        s = ident(made.schema)
        async with conn.transaction():
            if entry.server == SOURCE and made.publication:
                if await published(conn, made.publication, made.schema, WATERMARKS):
                    await conn.execute(f"ALTER PUBLICATION {ident(made.publication)} DROP TABLE {s}.{WATERMARKS}")
            await conn.execute(f"DROP TABLE IF EXISTS {s}.{WATERMARKS}")
            if entry.server == TARGET:
                await conn.execute(f"DROP TABLE IF EXISTS {s}.{DIGESTS}")
                await conn.execute(f"DROP FUNCTION IF EXISTS {s}.{TRIGGER}()")
            left = await conn.fetchval("SELECT count(*) FROM pg_class WHERE relnamespace = $1", oid)
            left += await conn.fetchval("SELECT count(*) FROM pg_proc WHERE pronamespace = $1", oid)
            if not left:
                await conn.execute(f"DROP SCHEMA {s}")
    await journal.undone(entry)
    return f"dropped the verification objects ({made.schema}) on the {entry.server} in {entry.database}"
