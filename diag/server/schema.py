"""The run server's PostgreSQL schema, versioned: ordered migration steps and ``schema_version``.

Tables (one row per run unless said otherwise)::

    runs(run_id, name, host, started, status, first_step, last_step, records, config jsonb,
         tags text[], meta bytea, updated)      meta = the store's meta map, msgpack (exact)
    marks(run_id, rank, seq)                    upload high-water mark per rank
    events(run_id, rank, seq, kind, step, t, data jsonb)   meta / event / alert / ack records
    records(run_id, rank, seq, kind, step, t, payload)     every record's exact wire bytes
    metric_chunks(run_id, rank, first_seq, last_seq, n, seqs, steps, ts)
    scalar_chunks(run_id, name, rank, first_seq, n, idx, vals)
    scalars(run_id, name, n, last, last_step, lo, hi)      per-run summary: filters and sorts

``records``, ``metric_chunks`` and ``scalar_chunks`` are partitioned by hash of ``run_id``: one
run's rows sit in one partition, so a run's reads touch one table and its index. The two chunk
tables hold the metrics as little-endian arrays, one row per uploaded batch and scalar name,
exactly as the SQLite store does (``probes.store``): a million points are a few hundred rows,
and a chart reads them without decoding a payload.

A migration is applied once, in its own transaction, in order; a server never runs against a
database whose version is newer than it knows.
"""

from __future__ import annotations

from typing import Any

PARTITIONS = 16

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "runs, marks, events; records and metric chunks partitioned by run",
        """
CREATE TABLE runs (
    run_id text PRIMARY KEY,
    name text NOT NULL,
    host text,
    started double precision,
    status text NOT NULL DEFAULT 'running',
    first_step bigint,
    last_step bigint,
    records bigint NOT NULL DEFAULT 0,
    config jsonb NOT NULL DEFAULT '{}',
    tags text[] NOT NULL DEFAULT '{}',
    meta bytea,
    updated timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX runs_started ON runs (started);
CREATE INDEX runs_status ON runs (status);
CREATE INDEX runs_tags ON runs USING gin (tags);
CREATE INDEX runs_config ON runs USING gin (config jsonb_path_ops);
CREATE TABLE marks (
    run_id text NOT NULL REFERENCES runs ON DELETE CASCADE,
    rank integer NOT NULL,
    seq bigint NOT NULL,
    PRIMARY KEY (run_id, rank)
);
CREATE TABLE events (
    run_id text NOT NULL REFERENCES runs ON DELETE CASCADE,
    rank integer NOT NULL,
    seq bigint NOT NULL,
    kind text NOT NULL,
    step bigint NOT NULL,
    t double precision NOT NULL,
    data jsonb NOT NULL,
    PRIMARY KEY (run_id, rank, seq)
);
CREATE INDEX events_kind ON events (kind, run_id);
CREATE TABLE records (
    run_id text NOT NULL,
    rank integer NOT NULL,
    seq bigint NOT NULL,
    kind text NOT NULL,
    step bigint NOT NULL,
    t double precision NOT NULL,
    payload bytea NOT NULL,
    PRIMARY KEY (run_id, rank, seq)
) PARTITION BY HASH (run_id);
CREATE TABLE metric_chunks (
    run_id text NOT NULL,
    rank integer NOT NULL,
    first_seq bigint NOT NULL,
    last_seq bigint NOT NULL,
    n integer NOT NULL,
    seqs bytea NOT NULL,
    steps bytea NOT NULL,
    ts bytea NOT NULL,
    PRIMARY KEY (run_id, rank, first_seq)
) PARTITION BY HASH (run_id);
CREATE TABLE scalar_chunks (
    run_id text NOT NULL,
    name text NOT NULL,
    rank integer NOT NULL,
    first_seq bigint NOT NULL,
    n integer NOT NULL,
    idx bytea,
    vals bytea NOT NULL,
    PRIMARY KEY (run_id, name, rank, first_seq)
) PARTITION BY HASH (run_id);
CREATE TABLE scalars (
    run_id text NOT NULL REFERENCES runs ON DELETE CASCADE,
    name text NOT NULL,
    n bigint NOT NULL,
    last double precision,
    last_step bigint,
    lo double precision,
    hi double precision,
    PRIMARY KEY (run_id, name)
);
CREATE INDEX scalars_last ON scalars (name, last);
"""
        + "".join(
            f"CREATE TABLE {table}_p{i} PARTITION OF {table} "
            f"FOR VALUES WITH (MODULUS {PARTITIONS}, REMAINDER {i});\n"
            for table in ("records", "metric_chunks", "scalar_chunks")
            for i in range(PARTITIONS)
        ),
    ),
]
VERSION = MIGRATIONS[-1][0]


class SchemaError(Exception):
    """A database this server cannot use (newer schema, not reachable); one-line reason."""


def migrate(conn: Any) -> int:
    """Bring the schema to :data:`VERSION`; returns the version found before. Concurrent
    servers serialise on an advisory lock, so each step runs exactly once."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(4545276368)")  # "EWch"
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY, "
            "description text NOT NULL, applied timestamptz NOT NULL DEFAULT now())"
        )
        found = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
    if found > VERSION:
        raise SchemaError(
            f"database schema version {found} is newer than this edgewatch knows ({VERSION}); "
            "upgrade edgewatch"
        )
    for version, description, sql in MIGRATIONS:
        if version <= found:
            continue
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(4545276368)")
            done = conn.execute(
                "SELECT 1 FROM schema_version WHERE version = %s", [version]
            ).fetchone()
            if done:
                continue
            conn.execute(sql)
            conn.execute(
                "INSERT INTO schema_version (version, description) VALUES (%s, %s)",
                [version, description],
            )
    return found
