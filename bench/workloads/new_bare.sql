-- 1. new key, bare SQL: INSERT ... ON CONFLICT DO NOTHING, then UPDATE with the response
\set k random(1, 9000000000000000000)
BEGIN;
INSERT INTO bare.keys (scope, key, fingerprint, state, token, attempt, locked_until, created_at, expires_at)
  VALUES ('new', :k, '\xf50d36c1739463e571da8e929fdeb3bc35c5bf86051c653d6a61deedcb10944e'::bytea, 'in_progress', :k, 1, now() + interval '60 seconds', now(), now() + interval '24 hours')
  ON CONFLICT DO NOTHING;
UPDATE bare.keys SET state = 'completed', response_status = 201, response_body = '\x7b226964223a31323334352c22616d6f756e74223a3130302c2263757272656e6379223a22455552222c22737461747573223a22737563636565646564227d'::bytea, response_headers = '{"content-type": "application/json"}'::jsonb, completed_at = now(), locked_until = NULL WHERE scope = 'new' AND key = :k;
COMMIT;
