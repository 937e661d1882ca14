# Life cycle of the background sweeper: what it deletes and what it keeps,
# discovery of new databases, DROP EXTENSION / DROP DATABASE, SIGHUP,
# idempotency.sweeper = off, pg_terminate_backend.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use Time::HiRes qw(time usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PgiTest;

my $node = new_node('sweeper');
$node->safe_psql('postgres', 'CREATE DATABASE app');
$node->safe_psql('app', 'CREATE EXTENSION pg_idempotency');

# --- the workers show in pg_stat_activity
my $app_pid = wait_for_sweeper($node, 'app', 10);
ok($app_pid ne '', 'a sweeper runs in a database that has the extension');
is($node->safe_psql('postgres',
		"SELECT application_name FROM pg_stat_activity WHERE pid = $app_pid"),
	'pg_idempotency sweeper', 'application_name names pg_idempotency');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_idempotency launcher'"),
	'1', 'one launcher');
ok(wait_no_sweeper($node, 'postgres', 10), 'no sweeper stays in a database without the extension');

# --- expired rows go; unexpired, leased in_progress and row-locked rows stay
$node->safe_psql('app', 'ALTER SYSTEM SET idempotency.sweeper = off');
$node->reload;
usleep(300_000);
insert_expired($node, 'app', 'old', 500);
$node->safe_psql('app', q{
	INSERT INTO idempotency.keys (scope, key, state, token, attempt, created_at, completed_at, expires_at, locked_until)
	SELECT 'fresh', 'k' || g, 'completed', g, 1, now(), now(), now() + interval '1 day', NULL FROM generate_series(1, 100) g;
	-- expired, but its holder's lease is still running: must stay
	INSERT INTO idempotency.keys (scope, key, state, token, attempt, created_at, expires_at, locked_until)
	VALUES ('leased', 'k1', 'in_progress', 1, 1, now() - interval '2 hours', now() - interval '1 hour', now() + interval '1 hour');
	-- expired and its lease is over: goes
	INSERT INTO idempotency.keys (scope, key, state, token, attempt, created_at, expires_at, locked_until)
	VALUES ('abandoned', 'k1', 'in_progress', 1, 1, now() - interval '2 hours', now() - interval '1 hour', now() - interval '1 hour');
	-- expired and row-locked by an open transaction (below): skipped, not waited for
	INSERT INTO idempotency.keys (scope, key, state, token, attempt, created_at, completed_at, expires_at)
	VALUES ('locked', 'k1', 'completed', 1, 1, now() - interval '2 hours', now() - interval '2 hours', now() - interval '1 hour');
});
# keys made through the API with a short ttl
$node->safe_psql('app', q{
	SELECT idempotency.finish('api', 'k' || g, (idempotency.claim('api', 'k' || g, NULL, interval '1 ms')).token, 200)
	FROM generate_series(1, 20) g});
my $locker = $node->background_psql('app');
$locker->query_safe(q{BEGIN; SELECT 1 FROM idempotency.keys WHERE scope = 'locked' FOR UPDATE;});

my $offset = -s $node->logfile;
$node->safe_psql('app', 'ALTER SYSTEM SET idempotency.sweeper = on');
my $t0 = time;
$node->reload;
my $elapsed = wait_until(sub { key_count($node, 'app', "scope IN ('old', 'api', 'abandoned')") == 0 }, 10);
ok(defined $elapsed, 'expired keys are swept');
note(sprintf('expired keys gone %.2f s after the sweeper was turned on', time - $t0));
is(key_count($node, 'app', "scope = 'fresh'"), '100', 'unexpired keys stay');
is(key_count($node, 'app', "scope = 'leased'"), '1', 'an expired in_progress key whose lease runs stays');
is(key_count($node, 'app', "scope = 'locked'"), '1', 'a row locked by another transaction is skipped');
ok($node->wait_for_log(qr/pg_idempotency sweeper: deleted \d+ expired keys in database "app" in [\d.]+ ms/, $offset),
	'one LOG line per sweep that removed keys');
$locker->query_safe('COMMIT');
$locker->quit;
ok(defined wait_until(sub { key_count($node, 'app', "scope = 'locked'") == 0 }, 5),
	'the skipped row goes once its lock is released');

ok(defined wait_until(sub {
	$node->safe_psql('app',
		"SELECT n_tup_del FROM pg_stat_user_tables WHERE relid = 'idempotency.keys'::regclass") >= 521;
}, 5), 'the sweeper\'s deletions reach pg_stat_user_tables (and so autovacuum)');
my $stats = $node->safe_psql('app', 'SELECT swept, last_sweep_at IS NOT NULL FROM idempotency.stats');
my ($swept, $has_last) = split /\|/, $stats;
cmp_ok($swept, '>=', 522, 'stats.swept counts the sweeper\'s deletions');
is($has_last, 't', 'stats.last_sweep_at is set');

# --- a database created after start-up is found within one interval
$node->safe_psql('postgres', 'CREATE DATABASE late');
usleep(1_500_000);    # the launcher has seen it (and probed it: no extension yet)
ok(wait_no_sweeper($node, 'late', 5), 'no sweeper in the new database before CREATE EXTENSION');
$t0 = time;
$node->safe_psql('late', 'CREATE EXTENSION pg_idempotency');
my $late_pid = wait_for_sweeper($node, 'late', 5);
ok($late_pid ne '', 'CREATE EXTENSION starts a sweeper');
note(sprintf('sweeper started %.2f s after CREATE EXTENSION', time - $t0));
insert_expired($node, 'late', 'old', 300);
$elapsed = wait_until(sub { key_count($node, 'late') == 0 }, 10);
ok(defined $elapsed && $elapsed < 3, 'the new database is swept within about one interval')
  or diag("elapsed: " . ($elapsed // 'timeout'));

# --- a CREATE EXTENSION that rolls back starts nothing
$node->safe_psql('postgres', 'CREATE DATABASE rolled');
$node->safe_psql('rolled', 'BEGIN; CREATE EXTENSION pg_idempotency; ROLLBACK;');
usleep(1_500_000);
is(sweeper_pid($node, 'rolled'), '', 'CREATE EXTENSION rolled back: no sweeper');
$node->safe_psql('rolled', 'BEGIN; CREATE EXTENSION pg_idempotency; SELECT pg_sleep(0.3); COMMIT;');
ok(wait_for_sweeper($node, 'rolled', 5) ne '', 'committed inside a transaction block: sweeper');
$node->safe_psql('postgres', 'DROP DATABASE rolled');

# --- DROP EXTENSION stops it; CREATE EXTENSION again brings it back
$offset = -s $node->logfile;
$node->safe_psql('late', 'DROP EXTENSION pg_idempotency');
ok(wait_no_sweeper($node, 'late', 5), 'DROP EXTENSION stops the sweeper');
ok($node->wait_for_log(qr/no extension pg_idempotency in database "late", exiting/, $offset),
	'the worker says why it left');
usleep(2_500_000);
is(sweeper_pid($node, 'late'), '', 'and it is not started again');
$node->safe_psql('late', 'CREATE EXTENSION pg_idempotency');
ok(wait_for_sweeper($node, 'late', 5) ne '', 'CREATE EXTENSION after DROP starts it again');

# --- commands that need the database free of sessions are not blocked by it
$t0 = time;
my ($rc, $out, $err) = $node->psql('postgres', 'CREATE DATABASE late_copy TEMPLATE late');
is($rc, 0, 'CREATE DATABASE ... TEMPLATE a swept database succeeds') or diag($err);
($rc, $out, $err) = $node->psql('postgres', 'DROP DATABASE late');
is($rc, 0, 'DROP DATABASE of a swept database succeeds without FORCE') or diag($err);
note(sprintf('CREATE DATABASE TEMPLATE + DROP DATABASE took %.2f s', time - $t0));
ok(wait_for_sweeper($node, 'late_copy', 5) ne '', 'the copy (it has the extension) is found and swept');
$node->safe_psql('postgres', 'DROP DATABASE late_copy');

# --- a role that does not own the database cannot pause its sweeper
my $app_before = sweeper_pid($node, 'app');
$node->safe_psql('postgres', 'CREATE ROLE intruder LOGIN');
($rc, $out, $err) = $node->psql('postgres', 'DROP DATABASE app', extra_params => [ '-U', 'intruder' ]);
isnt($rc, 0, 'DROP DATABASE by a non-owner fails');
usleep(300_000);
is(sweeper_pid($node, 'app'), $app_before, 'and leaves the sweeper alone');

# --- SIGHUP changes the interval
$node->safe_psql('postgres', "ALTER SYSTEM SET idempotency.sweep_interval = '1h'");
$node->reload;
usleep(1_500_000);    # the worker has woken up, swept, and now sleeps for an hour
insert_expired($node, 'app', 'hup', 100);
usleep(3_000_000);
is(key_count($node, 'app', "scope = 'hup'"), '100', 'sweep_interval = 1h after SIGHUP: no sweep for 3 s');
$node->safe_psql('postgres', "ALTER SYSTEM SET idempotency.sweep_interval = '200ms'");
$node->reload;
ok(defined wait_until(sub { key_count($node, 'app', "scope = 'hup'") == 0 }, 3),
	'sweep_interval back to 200ms after SIGHUP: swept');
insert_expired($node, 'app', 'hup2', 100);
$elapsed = wait_until(sub { key_count($node, 'app', "scope = 'hup2'") == 0 }, 3);
ok(defined $elapsed && $elapsed < 1.5, 'at 200ms keys go within about a second') or diag("elapsed: " . ($elapsed // 'timeout'));

# --- batches: at most sweep_batch_size keys per transaction
$node->safe_psql('postgres', "ALTER SYSTEM SET idempotency.sweep_batch_size = 70");
$node->safe_psql('postgres', "ALTER SYSTEM SET idempotency.sweep_interval = '1s'");
$node->reload;
usleep(1_500_000);
$offset = -s $node->logfile;
insert_expired($node, 'app', 'batch', 1000);
ok($node->wait_for_log(qr/deleted 1000 expired keys in database "app" in [\d.]+ ms \(15 transactions/, $offset),
	'1000 keys with sweep_batch_size = 70: 15 transactions in one sweep');
$node->safe_psql('postgres', "ALTER SYSTEM RESET idempotency.sweep_batch_size");
$node->reload;

# --- idempotency.sweeper = off
$node->safe_psql('postgres', 'ALTER SYSTEM SET idempotency.sweeper = off');
$node->reload;
usleep(1_500_000);
insert_expired($node, 'app', 'off', 100);
usleep(2_500_000);
is(key_count($node, 'app', "scope = 'off'"), '100', 'idempotency.sweeper = off: nothing is swept');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET idempotency.sweeper');
$node->reload;
ok(defined wait_until(sub { key_count($node, 'app', "scope = 'off'") == 0 }, 3), 'back on: swept');

# --- lock_timeout: a sweep behind an ACCESS EXCLUSIVE lock gives up and retries
insert_expired($node, 'app', 'lockwait', 100);
$offset = -s $node->logfile;
my $exclusive = $node->background_psql('app');
$exclusive->query_safe('BEGIN; LOCK TABLE idempotency.keys IN ACCESS EXCLUSIVE MODE;');
ok($node->wait_for_log(qr/pg_idempotency sweeper: sweep of database "app" failed after 0 keys: canceling statement due to lock timeout/, $offset),
	'a sweep blocked by a table lock gives up after lock_timeout (WARNING)');
$exclusive->query_safe('COMMIT');
$exclusive->quit;
ok(defined wait_until(sub { key_count($node, 'app', "scope = 'lockwait'") == 0 }, 5),
	'and the next sweep deletes the keys');

# --- pg_terminate_backend: the launcher starts it again
$app_pid = sweeper_pid($node, 'app');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($app_pid)");
my $new_pid = wait_for_sweeper($node, 'app', 10, $app_pid);
ok($new_pid ne '' && $new_pid ne $app_pid, 'a terminated sweeper is started again');
insert_expired($node, 'app', 'term', 100);
ok(defined wait_until(sub { key_count($node, 'app', "scope = 'term'") == 0 }, 5), 'and it sweeps');

# --- pg_terminate_backend of the launcher: it comes back (bgw_restart_time),
# its workers are replaced
my $launcher = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_idempotency launcher'");
$node->safe_psql('postgres', "SELECT pg_terminate_backend($launcher)");
my $new_launcher = '';
wait_until(sub {
	$new_launcher = $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_idempotency launcher'");
	return $new_launcher ne '' && $new_launcher ne $launcher;
}, 15);
ok($new_launcher ne '' && $new_launcher ne $launcher, 'a terminated launcher is restarted');
ok(wait_for_sweeper($node, 'app', 10, $new_pid) ne '', 'and a new sweeper runs in app');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_idempotency sweeper' AND datname = 'app'"),
	'1', 'only one');

# --- restart with several databases without the extension: each is probed
# once (at most two at a time) and none keeps a worker
$node->safe_psql('postgres', "CREATE DATABASE plain$_") for 1 .. 6;
$node->stop('fast');
$offset = -s $node->logfile;
$node->start;
ok(wait_for_sweeper($node, 'app', 10) ne '', 'after a restart the sweeper is back in app');
ok(defined wait_until(sub {
	my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile, $offset);
	my $n = () = $log =~ /no extension pg_idempotency in database "(?:postgres|plain\d)", exiting/g;
	return $n >= 7;
}, 15), 'every database without the extension was probed once');
usleep(1_500_000);
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_idempotency sweeper' AND datname <> 'app'"),
	'0', 'no worker stays in databases without the extension');
my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile, $offset);
my $probes = () = $log =~ /no extension pg_idempotency in database "plain1", exiting/g;
is($probes, 1, 'and each was probed only once');

# --- SIGTERM at shutdown is prompt
$t0 = time;
$node->stop('fast');
my $stop_s = time - $t0;
ok($stop_s < 5, 'fast shutdown with sweepers running is prompt');
note(sprintf('fast shutdown took %.2f s', $stop_s));

done_testing();
