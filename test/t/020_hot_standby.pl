# A hot standby serves retries (replay, mismatch, in_progress) from what it has
# replayed, and every call that would write fails with 25006 naming the key and
# pointing to the primary, before any lock or statement (never the internal
# INSERT's "read-only transaction"). After promotion the same keys are claimed.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PgiStandby;

# No sweeper: the expired key 'old' must stay for the standby to be asked about it.
my $primary = new_primary('hs_primary', "idempotency.sweeper = off");
my $fp1 = q{idempotency.fingerprint('{"amount":1}')};
my $fp2 = q{idempotency.fingerprint('{"amount":2}')};
# done: completed with a response; held: in_progress, long lease; short:
# in_progress with a lease that is over by the time the standby is asked;
# old: completed and expired.
my $held_token = $primary->safe_psql('app', qq{
	BEGIN;
	SELECT idempotency.finish('s', 'done', (SELECT token FROM idempotency.claim('s', 'done', $fp1)),
	                          201, convert_to('{"id":7}', 'UTF8'), '{"x":"y"}');
	COMMIT;
	SELECT token FROM idempotency.claim('s', 'short', lease => '1 ms');
	SELECT token FROM idempotency.claim('s', 'held', $fp1, lease => '1 hour');});
($held_token) = (split /\n/, $held_token)[-1];
$primary->safe_psql('app', q{
	INSERT INTO idempotency.keys (scope, key, state, token, attempt, created_at, completed_at, expires_at,
	                              response_status)
	VALUES ('s', 'old', 'completed', 1, 1, now() - interval '2 hours', now() - interval '2 hours',
	        now() - interval '1 hour', 200)});

my $standby = new_standby($primary, 'hs_standby');
is($standby->safe_psql('app', 'SELECT pg_is_in_recovery()'), 't', 'the standby is in recovery');

# --- answers that need no write
is($standby->safe_psql('app', qq{SELECT outcome, response_status, convert_from(response_body, 'UTF8'),
		response_headers, token IS NULL FROM idempotency.claim('s', 'done', $fp1)}),
	'replay|201|{"id":7}|{"x": "y"}|t', 'replay of a completed key with its stored response');
is($standby->safe_psql('app', qq{SELECT outcome FROM idempotency.claim('s', 'done')}), 'replay',
	'replay without a fingerprint');
is($standby->safe_psql('app', qq{SELECT outcome, response_status IS NULL FROM idempotency.claim('s', 'done', $fp2)}),
	'mismatch|t', 'mismatch of a different request, nothing stored returned');
is($standby->safe_psql('app', qq{SELECT outcome, token IS NULL, locked_until > now()
		FROM idempotency.claim('s', 'held', $fp1)}),
	'in_progress|t|t', 'in_progress of a key whose lease is running');
is($standby->safe_psql('app', qq{SELECT outcome FROM idempotency.claim('s', 'held', $fp2)}), 'mismatch',
	'mismatch takes precedence over in_progress');
is($standby->safe_psql('app', q{SELECT state, response_status FROM idempotency.lookup('s', 'done')}),
	'completed|201', 'lookup of a completed key');
is($standby->safe_psql('app', q{SELECT state FROM idempotency.lookup('s', 'held')}), 'in_progress',
	'lookup of a key in progress');
is($standby->safe_psql('app', q{SELECT lookup IS NULL FROM idempotency.lookup('s', 'never')}), 't',
	'lookup of an absent key: NULL');
is($standby->safe_psql('app', q{SELECT lookup IS NULL FROM idempotency.lookup('s', 'old')}), 't',
	'lookup of an expired key: NULL');

# --- calls that must write: 25006, naming the key, pointing to the primary
sub refused
{
	my ($sql, $verb, $key, $what) = @_;
	my $err = sql_error($standby, 'app', $sql);
	like($err, qr/ERROR:  25006: cannot $verb idempotency key "$key" in scope "s" on a hot standby/,
		"$what: 25006 naming the key");
	like($err, qr/HINT:  Send the request to the primary/, "$what: hint to go to the primary");
	unlike($err, qr/INSERT|UPDATE|DELETE|CONTEXT/, "$what: no internal statement in the error");
}
refused(q{SELECT idempotency.claim('s', 'new-key')}, 'claim', 'new-key', 'claim of a new key');
refused(q{SELECT idempotency.claim('s', 'new-key', wait => '1 s')}, 'claim', 'new-key', 'claim with wait');
refused(q{SELECT idempotency.claim('s', 'short')}, 'claim', 'short', 'claim of a key whose lease is over');
refused(q{SELECT idempotency.claim('s', 'old')}, 'claim', 'old', 'claim of an expired key');
refused(qq{SELECT idempotency.finish('s', 'held', $held_token, 200)}, 'finish', 'held', 'finish');
refused(q{SELECT idempotency.finish('s', 'done', 1, 200)}, 'finish', 'done', 'finish with a stale token');
refused(qq{SELECT idempotency.checkpoint('s', 'held', $held_token, 'step 2')}, 'checkpoint', 'held', 'checkpoint');
refused(qq{SELECT idempotency.release('s', 'held', $held_token)}, 'release', 'held', 'release');
refused(q{SELECT idempotency.once('s', 'new-key')}, 'process', 'new-key', 'once of a new key');
refused(q{SELECT idempotency.once('s', 'done')}, 'process', 'done', 'once of a processed key');
my $err = sql_error($standby, 'app', 'SELECT idempotency.sweep()');
like($err, qr/ERROR:  25006: cannot sweep expired idempotency keys on a hot standby/, 'sweep: 25006');
like($err, qr/HINT:  Run it on the primary/, 'sweep: hint to run it on the primary');
like(sql_error($standby, 'app', q{SELECT idempotency.claim('s', 'x', ttl => '0 s')}), qr/ERROR:  22023/,
	'argument errors still come first');

# --- nothing changed on the primary's data; the standby still agrees
$primary->wait_for_catchup($standby);
is($standby->safe_psql('app', q{SELECT string_agg(key || ':' || state, ',' ORDER BY key) FROM idempotency.keys}),
	'done:completed,held:in_progress,old:completed,short:in_progress', 'the refused calls changed nothing');

# --- after promotion the same calls write
$primary->stop('fast');
$standby->promote;
$standby->poll_query_until('app', 'SELECT NOT pg_is_in_recovery()') or die 'promotion did not finish';
is($standby->safe_psql('app', q{SELECT outcome FROM idempotency.claim('s', 'new-key')}), 'claimed',
	'promoted: a new key is claimed');
is($standby->safe_psql('app', q{SELECT outcome, attempt FROM idempotency.claim('s', 'short')}), 'claimed|2',
	'promoted: a lease-over key is taken over');
is($standby->safe_psql('app', qq{SELECT idempotency.finish('s', 'held', $held_token, 200)}), 't',
	'promoted: the holder finishes with its token');
$standby->stop('fast');
done_testing();
