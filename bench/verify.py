"""A cheap check that a method really copied everything: row counts per table, index and constraint counts,
and the number and total size of large objects."""

from __future__ import annotations

from dataclasses import dataclass

from bench.common import DATABASE
from bot.localpg import LocalCluster

USER_SCHEMAS = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'"


@dataclass(frozen=True)
class Shape:
    """What must be equal on both sides after a copy."""

    rows: dict[str, int]
    indexes: int
    constraints: int
    large_objects: int = 0
    large_object_bytes: int = 0


def tables(cluster: LocalCluster) -> list[str]:
    """User tables, largest first (the order the raw pipe copies them in)."""
    out = cluster.psql(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        f" WHERE c.relkind IN ('r', 'p') AND {USER_SCHEMAS} ORDER BY pg_relation_size(c.oid) DESC, 1",
        database=DATABASE,
    )
    return out.splitlines()


def shape(cluster: LocalCluster) -> Shape:
    names = tables(cluster)
    rows: dict[str, int] = {}
    if names:
        union = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {t}" for t in names)
        for line in cluster.psql(union, database=DATABASE).splitlines():
            name, count = line.split("|")
            rows[name] = int(count)
    indexes = int(
        cluster.psql(
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            f" JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {USER_SCHEMAS}",
            database=DATABASE,
        )
    )
    constraints = int(
        cluster.psql(
            "SELECT count(*) FROM pg_constraint k JOIN pg_namespace n ON n.oid = k.connamespace"
            f" WHERE k.contype IN ('p', 'u', 'f', 'x') AND {USER_SCHEMAS}",
            database=DATABASE,
        )
    )
    # octet_length per 2 kB page of pg_largeobject (superuser only; the bench is postgres): lo_get of
    # a 1 GiB object would exceed the 1 GB limit of a value.
    los, lo_bytes = cluster.psql(
        "SELECT (SELECT count(*) FROM pg_largeobject_metadata),"
        " (SELECT coalesce(sum(octet_length(data)), 0) FROM pg_largeobject)",
        database=DATABASE,
    ).split("|")
    return Shape(rows, indexes, constraints, int(los), int(lo_bytes))


def differences(expected: Shape, actual: Shape) -> list[str]:
    """Human-readable differences; empty when the target matches the source."""
    diffs = [
        f"{t}: {n} rows, target has {actual.rows.get(t)}" for t, n in expected.rows.items() if actual.rows.get(t) != n
    ]
    diffs += [f"unexpected table {t}" for t in actual.rows.keys() - expected.rows.keys()]
    if actual.indexes != expected.indexes:
        diffs.append(f"{expected.indexes} indexes, target has {actual.indexes}")
    if actual.constraints != expected.constraints:
        diffs.append(f"{expected.constraints} constraints, target has {actual.constraints}")
    if (actual.large_objects, actual.large_object_bytes) != (expected.large_objects, expected.large_object_bytes):
        diffs.append(
            f"{expected.large_objects} large objects of {expected.large_object_bytes} bytes, "
            f"target has {actual.large_objects} of {actual.large_object_bytes}"
        )
    return diffs
