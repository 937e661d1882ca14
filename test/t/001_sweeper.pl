# Life cycle of the background sweeper (a launcher and a pool of workers that
# take one database per turn): what it deletes and what it keeps, discovery of
# new databases (CREATE EXTENSION, also through COMMIT PREPARED), DROP
# EXTENSION / DROP DATABASE, SIGHUP, idempotency.sweeper = off,
# pg_terminate_backend of a worker and of the launcher.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use Time::HiRes qw(time usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PgiTest;

my $node = new_node('sweeper', 'max_prepared_transactions = 4');
$node->safe_psql('postgres', 'CREATE DATABASE app');
$node->safe_psql('app', 'CREATE EXTENSION pg_idempotency');

is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_idempotency launcher'"),
	'1', 'one launcher');

# --- a worker shows in pg_stat_activity while it sweeps (a long turn: many
# small batches, each followed by a pause)
$node->safe_psql('postgres', 'ALTER SYSTEM SET idempotency.sweep_batch_size = 20');
$node->reload;
insert_expired($node, 'app', 'long', 20000);
my $row = '';
wait_until(sub {
	$row = $node->safe_psql('postgres', "SELECT pid || '|' || application_name || ' / ' || backend_type
		FROM pg_stat_activity WHERE backend_type = 'pg_idempotency sweeper' AND datname = 'app' LIMIT 1");
	return $row ne '';
}, 10);
my ($app_pid, $names) = split /\|/, $row;
ok(defined $app_pid && $app_pid ne '', 'a sweeper worker is connected to the database while it sweeps');
is($names, 'pg_idempotency sweeper / pg_idempotency sweeper', 'application_name and backend_type name pg_idempotency');
# --- pg_terminate_backend of a worker mid-turn: the database gets another turn
$node->safe_psql('postgres', "SELECT pg_terminate_backend($app_pid)") if $app_pid;
$node->safe_psql('postgres', 'ALTER SYSTEM RESET idempotency.sweep_batch_size');
$node->reload;
ok(defined wait_swept($node, 'app', 'long', 10), 'a worker ended by pg_terminate_backend: its database is swept anyway');
ok(wait_no_sweeper($node, 'postgres', 5), 'no worker stays in a database without the extension');

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
usleep(1_500_000);
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_idempotency sweeper'"),
	'0', 'idempotency.sweeper = off: no worker runs');

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
	'one LOG line per turn that removed keys');
$locker->query_safe('COMMIT');
$locker->quit;
ok(defined wait_swept($node, 'app', 'locked', 5), 'the skipped row goes once its lock is released');

ok(defined wait_until(sub {
	$node->safe_psql('app',
		"SELECT n_tup_del FROM pg_stat_user_tables WHERE relid = 'idempotency.keys'::regclass") >= 20521;
}, 5), 'the sweeper\'s deletions reach pg_stat_user_tables (and so autovacuum)');
my $stats = $node->safe_psql('app', 'SELECT swept, last_sweep_at IS NOT NULL FROM idempotency.stats');
my ($swept, $has_last) = split /\|/, $stats;
cmp_ok($swept, '>=', 20522, 'stats.swept counts the sweeper\'s deletions');
is($has_last, 't', 'stats.last_sweep_at is set');

# --- CREATE EXTENSION in a database the launcher has already found without
# it: the commit wakes the launcher (else the next look would be 10 minutes away)
$node->safe_psql('postgres', 'CREATE DATABASE late');
usleep(1_500_000);    # the launcher has seen it and probed it: no extension
$t0 = time;
$node->safe_psql('late', q{BEGIN; CREATE EXTENSION pg_idempotency;
	INSERT INTO idempotency.keys (scope, key, state, token, attempt, created_at, completed_at, expires_at)
	SELECT 'old', 'k' || g, 'completed', g, 1, now() - interval '2 hours', now() - interval '2 hours', now() - interval '1 hour'
	FROM generate_series(1, 300) g; COMMIT;});
$elapsed = wait_swept($node, 'late', 'old', 10);
ok(defined $elapsed && $elapsed < 3, 'CREATE EXTENSION: the new database is swept at once')
  or diag("elapsed: " . ($elapsed // 'timeout'));
note(sprintf('swept %.2f s after CREATE EXTENSION', $elapsed // -1));

# --- a CREATE EXTENSION that rolls back starts nothing; one committed in a
# transaction block does
$node->safe_psql('postgres', 'CREATE DATABASE rolled');
usleep(1_500_000);
$offset = -s $node->logfile;
$node->safe_psql('rolled', 'BEGIN; CREATE EXTENSION pg_idempotency; ROLLBACK;');
my $seen = 0;
wait_until(sub { $seen ||= sweeper_pid($node, 'rolled') ne ''; 0 }, 1.5);
ok(!$seen, 'CREATE EXTENSION rolled back: no worker goes there');
$node->safe_psql('rolled', q{BEGIN; CREATE EXTENSION pg_idempotency; SELECT pg_sleep(0.3);
	INSERT INTO idempotency.keys (scope, key, state, token, attempt, created_at, expires_at, locked_until)
	VALUES ('old', 'k1', 'in_progress', 1, 1, now() - interval '2 hours', now() - interval '1 hour', now() - interval '1 hour');
	COMMIT;});
$elapsed = wait_swept($node, 'rolled', 'old', 10);
ok(defined $elapsed && $elapsed < 3, 'committed inside a transaction block: swept at once');
$node->safe_psql('postgres', 'DROP DATABASE rolled');

# --- PREPARE TRANSACTION + COMMIT PREPARED from another session (as Citus
# propagates DDL): swept at once too
$node->safe_psql('postgres', 'CREATE DATABASE twophase');
usleep(1_500_000);
$node->safe_psql('twophase', q{BEGIN; CREATE EXTENSION pg_idempotency;
	INSERT INTO idempotency.keys (scope, key, state, token, attempt, created_at, expires_at, locked_until)
	VALUES ('old', 'k1', 'in_progress', 1, 1, now() - interval '2 hours', now() - interval '1 hour', now() - interval '1 hour');
	PREPARE TRANSACTION 'pgi_create';});
usleep(1_500_000);
is(sweeper_pid($node, 'twophase'), '', 'prepared, not committed: no worker there');
$node->safe_psql('twophase', "COMMIT PREPARED 'pgi_create'");
$elapsed = wait_swept($node, 'twophase', 'old', 10);
ok(defined $elapsed && $elapsed < 3, 'COMMIT PREPARED of a CREATE EXTENSION: swept at once')
  or diag("elapsed: " . ($elapsed // 'timeout'));
$node->safe_psql('postgres', 'DROP DATABASE twophase');

# --- DROP EXTENSION stops it; CREATE EXTENSION again brings it back
$offset = -s $node->logfile;
$node->safe_psql('late', 'DROP EXTENSION pg_idempotency');
ok($node->wait_for_log(qr/no extension pg_idempotency in database "late", exiting/, $offset),
	'after DROP EXTENSION the next worker there says why it left');
usleep(2_500_000);
my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile, $offset);
my $visits = () = $log =~ /no extension pg_idempotency in database "late"/g;
is($visits, 1, 'and no worker goes there again');
$node->safe_psql('late', q{BEGIN; CREATE EXTENSION pg_idempotency;
	INSERT INTO idempotency.keys (scope, key, state, token, attempt, created_at, completed_at, expires_at)
	VALUES ('old', 'k1', 'completed', 1, 1, now() - interval '2 hours', now() - interval '2 hours', now() - interval '1 hour');
	COMMIT;});
ok(defined wait_swept($node, 'late', 'old', 3), 'CREATE EXTENSION after DROP: swept again');

# --- commands that need the database free of sessions are not blocked by a
# worker in the middle of a turn there
$node->safe_psql('postgres', 'ALTER SYSTEM SET idempotency.sweep_batch_size = 20');
$node->reload;
insert_expired($node, 'late', 'busy', 20000);
ok(wait_for_sweeper($node, 'late', 10) ne '', 'a worker is sweeping the database');
$t0 = time;
my ($rc, $out, $err) = $node->psql('postgres', 'CREATE DATABASE late_copy TEMPLATE late');
is($rc, 0, 'CREATE DATABASE ... TEMPLATE a database being swept succeeds') or diag($err);
note(sprintf('CREATE DATABASE TEMPLATE took %.2f s', time - $t0));
ok(wait_for_sweeper($node, 'late_copy', 10) ne '', 'the copy (it has the extension) is found and swept');
$t0 = time;
($rc, $out, $err) = $node->psql('postgres', 'DROP DATABASE late_copy');
is($rc, 0, 'DROP DATABASE of a database being swept succeeds without FORCE') or diag($err);
note(sprintf('DROP DATABASE took %.2f s', time - $t0));
$node->safe_psql('postgres', 'DROP DATABASE late');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET idempotency.sweep_batch_size');
$node->reload;

# --- a role that does not own the database cannot pause its sweeping
$node->safe_psql('postgres', 'CREATE ROLE intruder LOGIN');
($rc, $out, $err) = $node->psql('postgres', 'DROP DATABASE app', extra_params => [ '-U', 'intruder' ]);
isnt($rc, 0, 'DROP DATABASE by a non-owner fails');
insert_expired($node, 'app', 'intruded', 100);
$elapsed = wait_swept($node, 'app', 'intruded', 10);
ok(defined $elapsed && $elapsed < 3, 'and sweeping goes on there (no 10 s hold)');

# --- SIGHUP changes the interval
$node->safe_psql('postgres', "ALTER SYSTEM SET idempotency.sweep_interval = '1h'");
$node->reload;
usleep(1_500_000);    # the last turn has ended; the next is an hour away
insert_expired($node, 'app', 'hup', 100);
usleep(3_000_000);
is(key_count($node, 'app', "scope = 'hup'"), '100', 'sweep_interval = 1h after SIGHUP: no sweep for 3 s');
$node->safe_psql('postgres', "ALTER SYSTEM SET idempotency.sweep_interval = '200ms'");
$node->reload;
ok(defined wait_swept($node, 'app', 'hup', 3), 'sweep_interval back to 200ms after SIGHUP: swept');
insert_expired($node, 'app', 'hup2', 100);
$elapsed = wait_swept($node, 'app', 'hup2', 3);
ok(defined $elapsed && $elapsed < 1.5, 'at 200ms keys go within about a second') or diag("elapsed: " . ($elapsed // 'timeout'));

# --- batches: at most sweep_batch_size keys per transaction
$node->safe_psql('postgres', "ALTER SYSTEM SET idempotency.sweep_batch_size = 70");
$node->safe_psql('postgres', "ALTER SYSTEM SET idempotency.sweep_interval = '1s'");
$node->reload;
usleep(1_500_000);
$offset = -s $node->logfile;
insert_expired($node, 'app', 'batch', 1000);
ok($node->wait_for_log(qr/deleted 1000 expired keys in database "app" in [\d.]+ ms \(15 transactions/, $offset),
	'1000 keys with sweep_batch_size = 70: 15 transactions in one turn');
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
ok(defined wait_swept($node, 'app', 'off', 3), 'back on: swept');

# --- lock_timeout: a sweep behind an ACCESS EXCLUSIVE lock gives up and retries
insert_expired($node, 'app', 'lockwait', 100);
$offset = -s $node->logfile;
my $exclusive = $node->background_psql('app');
$exclusive->query_safe('BEGIN; LOCK TABLE idempotency.keys IN ACCESS EXCLUSIVE MODE;');
ok($node->wait_for_log(qr/pg_idempotency sweeper: sweep of database "app" failed after 0 keys: canceling statement due to lock timeout/, $offset),
	'a sweep blocked by a table lock gives up after lock_timeout (WARNING)');
$exclusive->query_safe('COMMIT');
$exclusive->quit;
ok(defined wait_swept($node, 'app', 'lockwait', 5), 'and the next turn deletes the keys');

# --- pg_terminate_backend of the launcher: it comes back (bgw_restart_time)
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
insert_expired($node, 'app', 'relaunched', 100);
ok(defined wait_swept($node, 'app', 'relaunched', 5), 'and sweeping goes on');

# --- restart with several databases without the extension: each is looked
# at once at start-up, and no worker goes back there
$node->safe_psql('postgres', "CREATE DATABASE plain$_") for 1 .. 6;
$node->stop('fast');
$node->start;
insert_expired($node, 'app', 'restarted', 100);
ok(defined wait_swept($node, 'app', 'restarted', 10), 'after a restart app is swept');
usleep(1_000_000);
$seen = 0;
wait_until(sub {
	$seen += $node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity
		WHERE backend_type = 'pg_idempotency sweeper' AND datname <> 'app'");
	0;
}, 2.5);
is($seen, 0, 'once probed, no worker goes to the databases without the extension');
my $log_all = PostgreSQL::Test::Utils::slurp_file($node->logfile);
unlike($log_all, qr/no extension pg_idempotency in database "plain/, 'probes of databases without it log nothing');

# --- SIGTERM at shutdown is prompt, also in the middle of a turn
$node->safe_psql('postgres', 'ALTER SYSTEM SET idempotency.sweep_batch_size = 20');
$node->reload;
insert_expired($node, 'app', 'shutdown', 20000);
wait_for_sweeper($node, 'app', 10);
$t0 = time;
$node->stop('fast');
my $stop_s = time - $t0;
ok($stop_s < 5, 'fast shutdown with a sweeper running is prompt');
note(sprintf('fast shutdown took %.2f s', $stop_s));

done_testing();
