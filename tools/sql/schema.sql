-- The PostgreSQL side of the benchmarks and of tests/it/postgres_side.rs: what a finance team
-- would otherwise keep. A bigserial global position, a unique (stream, version), a jsonb payload.
CREATE TABLE events (
    position     bigserial PRIMARY KEY,
    stream       text        NOT NULL,
    version      bigint      NOT NULL,
    event_id     uuid        NOT NULL UNIQUE,
    event_type   text        NOT NULL,
    recorded_at  timestamptz NOT NULL,
    effective_at timestamptz,
    payload      jsonb       NOT NULL,
    UNIQUE (stream, version)
)
