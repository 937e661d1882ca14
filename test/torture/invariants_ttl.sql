-- Invariants after `torture load --ttl-ms N` (short ttl: keys expire, are
-- swept by the background sweeper and claimed again mid-run; each ttl window
-- of a key is one "generation", known by its expires_at).
-- One row per check with the number of violations (must be 0).
WITH b AS (SELECT * FROM torture.business WHERE scope = :'scope'),
     k AS (SELECT * FROM idempotency.keys WHERE scope = :'scope'),
     s AS (SELECT * FROM torture.seen WHERE scope = :'scope')
SELECT 'business row without an acknowledged finish' AS check, count(*) AS violations
  FROM b WHERE NOT EXISTS (SELECT 1 FROM s WHERE s.kind = 'F' AND s.key = b.key AND s.value = 'id=' || b.id)
UNION ALL
SELECT 'acknowledged finish without its business row', count(*)
  FROM s WHERE s.kind = 'F' AND NOT EXISTS (SELECT 1 FROM b WHERE b.key = s.key AND 'id=' || b.id = s.value)
UNION ALL
SELECT 'two completions in one generation', count(*)
  FROM (SELECT key, expires_at FROM b GROUP BY key, expires_at HAVING count(*) > 1) AS twice
UNION ALL
SELECT 'a generation claimed before the previous one expired', count(*)
  FROM (SELECT claimed_at, lag(expires_at) OVER (PARTITION BY key ORDER BY claimed_at, id) AS prev FROM b) AS g
 WHERE claimed_at < prev
UNION ALL
SELECT 'completed row without the business row of its generation', count(*)
  FROM k WHERE k.state = 'completed'
   AND NOT EXISTS (SELECT 1 FROM b WHERE b.key = k.key AND b.expires_at = k.expires_at
                   AND convert_from(k.response_body, 'UTF8') = 'id=' || b.id AND b.token = k.token)
UNION ALL
SELECT 'replay that matches no completion of its key', count(*)
  FROM s WHERE s.kind = 'R' AND NOT EXISTS (SELECT 1 FROM b WHERE b.key = s.key AND 'id=' || b.id = s.value)
UNION ALL
SELECT 'in_progress key with a stored response', count(*)
  FROM k WHERE k.state = 'in_progress' AND (k.response_status IS NOT NULL OR k.response_body IS NOT NULL);
