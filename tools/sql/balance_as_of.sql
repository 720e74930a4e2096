-- A contract's balance per bucket as of an effective time: the sum of its movements (R12), what
-- `ledgerctl balance CONTRACT --as-of T` answers. $1 stream ('contract-<id>'), $2 time (RFC 3339)
SELECT m->>'bucket',
       sum(CASE WHEN m->>'kind' IN ('purchased', 'returned') THEN (m->>'quantity')::numeric
                ELSE -(m->>'quantity')::numeric END)::text
FROM events e, jsonb_array_elements(e.payload->'movements') m
WHERE e.stream = $1 AND coalesce(e.effective_at, e.recorded_at) <= $2::text::timestamptz
GROUP BY 1
