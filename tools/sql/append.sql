-- One event with an expected version (the stream's current last version), in one transaction:
-- nothing is inserted when the stream has moved, as the ledger's ExpectedVersion::Exact refuses.
-- $1 stream, $2 expected version, $3 event id, $4 type, $5 recorded at, $6 effective at, $7 payload
INSERT INTO events (stream, version, event_id, event_type, recorded_at, effective_at, payload)
SELECT $1, $2::bigint + 1, $3::text::uuid, $4, $5::text::timestamptz, $6::text::timestamptz, $7::text::jsonb
WHERE (SELECT coalesce(max(version), 0) FROM events WHERE stream = $1) = $2::bigint
