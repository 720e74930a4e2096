-- Every contract's balance per bucket from scratch: the SQL counterpart of rebuilding the
-- balances projection (the sum of every movement, R12).
SELECT e.stream, m->>'bucket',
       sum(CASE WHEN m->>'kind' IN ('purchased', 'returned') THEN (m->>'quantity')::numeric
                ELSE -(m->>'quantity')::numeric END)::text
FROM events e, jsonb_array_elements(e.payload->'movements') m
GROUP BY 1, 2
