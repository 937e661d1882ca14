-- peer_simple: the idempotency-key table most teams write today (Stripe-like).
-- Same table shape and indexes as idempotency.keys; claim = INSERT ... ON
-- CONFLICT DO NOTHING, then a SELECT to tell replay / mismatch / in progress;
-- finish = UPDATE. No leases, no takeover, no fencing beyond the token match,
-- no argument checks; a duplicate of a key whose first claim is still
-- uncommitted blocks in the INSERT until that transaction ends.

DROP SCHEMA IF EXISTS peer_simple CASCADE;
CREATE SCHEMA peer_simple;

CREATE TABLE peer_simple.keys (
  scope            text NOT NULL,
  key              text NOT NULL,
  fingerprint      bytea,
  state            text NOT NULL,
  token            bigint NOT NULL,
  attempt          int NOT NULL,
  recovery_point   text,
  locked_until     timestamptz,
  created_at       timestamptz NOT NULL,
  completed_at     timestamptz,
  expires_at       timestamptz NOT NULL,
  response_status  int,
  response_headers jsonb,
  response_body    bytea,
  PRIMARY KEY (scope, key)
) WITH (fillfactor = 80);
CREATE INDEX keys_expires_at_idx ON peer_simple.keys (expires_at);

CREATE TYPE peer_simple.claim_result AS (
  outcome          text,
  token            bigint,
  response_status  int,
  response_headers jsonb,
  response_body    bytea
);

CREATE FUNCTION peer_simple.claim(p_scope text, p_key text, p_fingerprint bytea DEFAULT NULL)
RETURNS peer_simple.claim_result LANGUAGE plpgsql AS $fn$
DECLARE
  r   peer_simple.keys;
  res peer_simple.claim_result;
  t   bigint := (random() * 9.2e18 - 4.6e18)::bigint;
BEGIN
  INSERT INTO peer_simple.keys (scope, key, fingerprint, state, token, attempt,
                                locked_until, created_at, expires_at)
  VALUES (p_scope, p_key, p_fingerprint, 'in_progress', t, 1,
          now() + interval '60 seconds', now(), now() + interval '24 hours')
  ON CONFLICT (scope, key) DO NOTHING;
  IF FOUND THEN
    res.outcome := 'claimed';
    res.token := t;
    RETURN res;
  END IF;
  SELECT * INTO r FROM peer_simple.keys WHERE scope = p_scope AND key = p_key;
  IF r.fingerprint IS DISTINCT FROM p_fingerprint THEN
    res.outcome := 'mismatch';
  ELSIF r.state = 'completed' THEN
    res.outcome := 'replay';
    res.response_status := r.response_status;
    res.response_headers := r.response_headers;
    res.response_body := r.response_body;
  ELSE
    res.outcome := 'in_progress';
  END IF;
  RETURN res;
END
$fn$;

CREATE FUNCTION peer_simple.finish(p_scope text, p_key text, p_token bigint, p_status int,
                                   p_body bytea DEFAULT NULL, p_headers jsonb DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql AS $fn$
BEGIN
  UPDATE peer_simple.keys
     SET state = 'completed', response_status = p_status, response_body = p_body,
         response_headers = p_headers, completed_at = now(), locked_until = NULL
   WHERE scope = p_scope AND key = p_key AND token = p_token AND state = 'in_progress';
  RETURN FOUND;
END
$fn$;
