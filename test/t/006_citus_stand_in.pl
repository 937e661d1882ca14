# The extension's Citus code paths (extension/keys/citus.cpp) without Citus: a
# stand-in for the parts of Citus' catalog the extension reads (a "citus" row
# in pg_extension, pg_dist_partition, pg_dist_shard, pg_dist_placement,
# pg_dist_local_group, shard_name()) and plain tables named as Citus names
# shards. Nothing here needs Citus; the same paths were checked by hand on a
# real cluster (README, "Scale-out with Citus").
#   - the background sweeper sweeps the shards placed on this node, in
#     batches of sweep_batch_size, and leaves alone the distributed table
#     itself, shards placed elsewhere and shards with several placements;
#   - sweep() by hand takes the form Citus can run across shards;
#   - a takeover of a row another transaction holds answers in_progress at
#     once with wait 0, and is claimed once the holder ends within wait; it
#     waits by polling with statements that skip a held row instead of
#     raising (FOR UPDATE SKIP LOCKED and a plain read), so the waiter adds
#     no ERROR line to the log (on Citus: the worker's log), and a row that
#     is deleted, or deleted and inserted again, while it waits is judged as
#     it is then;
#   - with more than one copy of a shard (citus.shard_replication_factor >
#     1), where Citus refuses row locks, a takeover by claim() or once() is
#     refused with 0A000 naming the setting, on a worker and on the
#     coordinator; new keys are still claimed, with a WARNING once per
#     backend; replays, finish and lookup go on working; a reference table
#     (copies everywhere, row locks allowed) is not refused.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use Time::HiRes qw(time usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PgiTest;

my $node = new_node('citus_stand_in', 'idempotency.sweeper = off', 'idempotency.sweep_batch_size = 50');
$node->safe_psql('postgres', 'CREATE DATABASE app');
$node->safe_psql('app', 'CREATE EXTENSION pg_idempotency');

# This node is group 1. Shards 102008 and 102009 are placed here only, 102010
# here and on group 2 (two placements), 102011 on group 2 only.
$node->safe_psql('app', q{
	SET allow_system_table_mods = on;
	INSERT INTO pg_catalog.pg_extension (oid, extname, extowner, extnamespace, extrelocatable, extversion)
	VALUES (99917, 'citus', 10, 11, false, 'stand-in');
	CREATE TABLE pg_catalog.pg_dist_partition (logicalrelid regclass NOT NULL, partmethod "char" NOT NULL);
	CREATE TABLE pg_catalog.pg_dist_shard (logicalrelid regclass NOT NULL, shardid bigint NOT NULL);
	CREATE TABLE pg_catalog.pg_dist_placement (shardid bigint NOT NULL, groupid int NOT NULL);
	CREATE TABLE pg_catalog.pg_dist_local_group (groupid int NOT NULL);
	CREATE FUNCTION pg_catalog.shard_name(regclass, bigint) RETURNS text LANGUAGE sql
	  AS $$ SELECT 'idempotency.' || pg_catalog.quote_ident(c.relname || '_' || $2) FROM pg_class c WHERE c.oid = $1 $$;
	INSERT INTO pg_catalog.pg_dist_local_group VALUES (1);
	INSERT INTO pg_catalog.pg_dist_partition VALUES ('idempotency.keys', 'h');
	INSERT INTO pg_catalog.pg_dist_shard SELECT 'idempotency.keys', s FROM generate_series(102008, 102011) s;
	INSERT INTO pg_catalog.pg_dist_placement VALUES (102008, 1), (102009, 1), (102010, 1), (102010, 2), (102011, 2);
});
for my $shard (102008 .. 102011)
{
	$node->safe_psql('app', qq{
		CREATE TABLE idempotency.keys_$shard (LIKE idempotency.keys INCLUDING ALL);
		INSERT INTO idempotency.keys_$shard (scope, key, state, token, attempt, created_at, completed_at, expires_at)
		SELECT 'expired', 'k' || g, 'completed', g, 1, now() - interval '2 hours', now() - interval '2 hours',
		       now() - interval '1 hour'
		FROM generate_series(1, 120) g;
		INSERT INTO idempotency.keys_$shard (scope, key, state, token, attempt, created_at, completed_at, expires_at)
		SELECT 'live', 'k' || g, 'completed', g, 1, now(), now(), now() + interval '1 day' FROM generate_series(1, 10) g;
		INSERT INTO idempotency.keys_$shard (scope, key, state, token, attempt, created_at, expires_at, locked_until)
		VALUES ('leased', 'k1', 'in_progress', 1, 1, now() - interval '2 hours', now() - interval '1 hour',
		        now() + interval '1 hour');
	});
}
# On a real coordinator the distributed table itself is an empty shell; rows
# here show that the background sweeper never sweeps it.
insert_expired($node, 'app', 'shell', 40);

sub shard_count
{
	my ($shard, $scope) = @_;
	return $node->safe_psql('app', "SELECT count(*) FROM idempotency.keys_$shard WHERE scope = '$scope'");
}

# --- the background sweeper: this node's single-placement shards only
my $offset = -s $node->logfile;
set_and_reload($node, 'idempotency.sweeper', 'on');
ok(defined wait_until(sub { shard_count(102008, 'expired') == 0 && shard_count(102009, 'expired') == 0 }, 20),
	'the sweeper empties the expired keys of the shards placed only here');
# A turn may stop early and leave the rest to the next one: add up every
# turn's LOG line (written once the turn is over).
my ($deleted, $transactions, $log) = (0, 0, '');
wait_until(sub {
	$log = PostgreSQL::Test::Utils::slurp_file($node->logfile, $offset);
	($deleted, $transactions) = (0, 0);
	while ($log =~ /deleted (\d+) expired keys in database "app" in [\d.]+ ms \((\d+) transactions/g)
	{
		$deleted += $1;
		$transactions += $2;
	}
	return $deleted >= 240;
}, 20);
is($deleted, 240, 'it deleted the 240 expired keys of the two shards, nothing else');
cmp_ok($transactions, '>=', 5, 'in transactions of at most sweep_batch_size (50) rows');
is(shard_count($_, 'live') . '/' . shard_count($_, 'leased'), '10/1', "shard $_: live and leased keys stay")
  for (102008, 102009);
is(shard_count(102010, 'expired'), '120', 'a shard with a second placement elsewhere is left alone');
is(shard_count(102011, 'expired'), '120', 'a shard placed on another node is left alone');
is(key_count($node, 'app', "scope = 'shell'"), '40', 'the distributed table itself is never swept by the sweeper');
unlike($log, qr/sweep of database "app" failed/, 'no failed sweep');
set_and_reload($node, 'idempotency.sweeper', 'off');

# --- sweep() by hand: the statement Citus runs across shards, on the table
is($node->safe_psql('app', 'SELECT idempotency.sweep(15)'), '15', 'sweep(15) deletes 15 keys through the table');
is($node->safe_psql('app', 'SELECT idempotency.sweep()'), '25', 'sweep() deletes the rest');
is(key_count($node, 'app', "scope = 'shell'"), '0', 'sweep() went through the table');
is(shard_count(102010, 'expired'), '120', 'sweep() does not touch shard tables directly');

# --- takeover of a row another transaction holds
# Citus' default layout from here on: one copy of each shard.
$node->safe_psql('app', 'DELETE FROM pg_catalog.pg_dist_placement WHERE shardid = 102010 AND groupid = 2');

# A held row, its lease over. On Citus the waiter's statements reach the
# worker as statements of their own, and each one that fails is an ERROR line
# in the worker's log; here they run in this server, where an error the
# extension catches is never logged. So auto_explain (log_nested_statements)
# shows in the log the statements the waiter ran: polls that skip a held row
# rather than fail on it, and no ERROR line around them.
sub held_row
{
	my ($key) = @_;
	$node->safe_psql('app', qq{
		INSERT INTO idempotency.keys (scope, key, state, token, attempt, created_at, expires_at, locked_until)
		VALUES ('t', '$key', 'in_progress', 1, 1, now() - interval '2 hours', now() + interval '1 hour',
		        now() - interval '1 minute')});
	my $holder = $node->background_psql('app');
	$holder->query_safe(qq{BEGIN; SELECT 1 FROM idempotency.keys WHERE scope = 't' AND key = '$key' FOR UPDATE;});
	return $holder;
}
# Starts claim('t', $key) with a 60 s wait in a session of its own.
sub waiting_claim
{
	my ($key) = @_;
	my $claimer = $node->background_psql('app');
	$claimer->query_safe(q{LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0;
		SET auto_explain.log_nested_statements = on});
	$claimer->query_until(qr/started/, qq{
		\\echo started
		SELECT outcome || '/' || coalesce(attempt::text, '-') FROM idempotency.claim('t', '$key', NULL, NULL, NULL, '60 seconds');
	});
	return $claimer;
}
sub polls_since
{
	my ($offset) = @_;
	my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile, $offset);
	return scalar(() = $log =~ /FOR UPDATE SKIP LOCKED/g);
}
sub waiting_now
{
	my ($key) = @_;
	return $node->safe_psql('app', "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%''$key''%60 seconds%'"
		  . " AND state = 'active' AND pid <> pg_backend_pid()") eq '1';
}

$offset = -s $node->logfile;
my $holder = held_row('held');
my $t0 = time;
is($node->safe_psql('app', q{SET statement_timeout = '20s'; SELECT outcome FROM idempotency.claim('t', 'held')}),
	'in_progress', 'wait 0: a row another transaction holds answers in_progress');
cmp_ok(time - $t0, '<', 10, '... without waiting for the holder');
is($node->safe_psql('app', q{SELECT outcome FROM idempotency.claim('t', 'held', NULL, NULL, NULL, '300 ms')}),
	'in_progress', 'a wait that runs out while the row is held answers in_progress');
my $claimer = waiting_claim('held');
ok(defined wait_until(sub { waiting_now('held') }, 10), 'a claim with a wait is waiting');
ok(defined wait_until(sub { polls_since($offset) >= 3 }, 20),
	'it polls the held row with FOR UPDATE SKIP LOCKED (the log shows the statements it ran)');
$holder->query_safe('COMMIT');
$holder->quit;
like($claimer->query_safe('SELECT 1'), qr{^claimed/2$}m, 'the waiting claim took the key over once the holder ended');
$claimer->quit;
is($node->safe_psql('app', "SELECT state || '/' || attempt FROM idempotency.keys WHERE scope = 't' AND key = 'held'"),
	'in_progress/2', '... and holds it (attempt 2)');

# While it waits, the holder deletes the row (a release; a sweeper) and
# commits: the key is absent, and the waiting claim takes it as new.
$holder = held_row('deleted');
$claimer = waiting_claim('deleted');
ok(defined wait_until(sub { waiting_now('deleted') }, 10), 'a claim waits on a held row');
$holder->query_safe(q{DELETE FROM idempotency.keys WHERE scope = 't' AND key = 'deleted'; COMMIT});
$holder->quit;
like($claimer->query_safe('SELECT 1'), qr{^claimed/1$}m, 'the holder deleted the row: the waiting claim takes the key afresh');
$claimer->quit;

# The holder deletes the row and inserts the key again, completed, in one
# transaction: the waiting claim meets the new row and answers for it.
$holder = held_row('replaced');
$claimer = waiting_claim('replaced');
ok(defined wait_until(sub { waiting_now('replaced') }, 10), 'a claim waits on a held row');
$holder->query_safe(q{DELETE FROM idempotency.keys WHERE scope = 't' AND key = 'replaced';
	INSERT INTO idempotency.keys (scope, key, state, token, attempt, created_at, completed_at, expires_at, response_status)
	VALUES ('t', 'replaced', 'completed', 7, 1, now(), now(), now() + interval '1 hour', 201); COMMIT});
$holder->quit;
like($claimer->query_safe('SELECT 1'), qr{^replay/1$}m,
	'the row was deleted and inserted again, completed: the waiting claim answers replay');
$claimer->quit;

$log = PostgreSQL::Test::Utils::slurp_file($node->logfile, $offset);
unlike($log, qr/ERROR|could not obtain lock/, 'none of these waits left an ERROR line in the server log');

# --- more than one copy of a shard (citus.shard_replication_factor = 2)
$node->safe_psql('app', q{
	INSERT INTO idempotency.keys (scope, key, state, token, attempt, created_at, completed_at, expires_at, response_status)
	VALUES ('r', 'done', 'completed', 5, 1, now(), now(), now() + interval '1 hour', 200);
	INSERT INTO idempotency.keys (scope, key, state, token, attempt, created_at, expires_at, locked_until)
	VALUES ('r', 'flying', 'in_progress', 6, 1, now(), now() + interval '1 hour', now() + interval '1 hour'),
	       ('r', 'lapsed', 'in_progress', 7, 1, now(), now() + interval '1 hour', now() - interval '1 minute');
	INSERT INTO idempotency.keys (scope, key, state, token, attempt, created_at, completed_at, expires_at, response_status)
	VALUES ('r', 'expired', 'completed', 8, 1, now() - interval '2 days', now() - interval '2 days', now() - interval '1 day', 200);
	INSERT INTO pg_catalog.pg_dist_placement SELECT s, 2 FROM generate_series(102008, 102009) s;
	INSERT INTO pg_catalog.pg_dist_placement VALUES (102011, 1);
});
sub refused
{
	my ($sql) = @_;
	my ($ret, $out, $err) = $node->psql('app', "\\set VERBOSITY verbose\n$sql");
	return $err;
}
for my $group (1, 0)
{
	my $where = $group ? 'on a worker' : 'on the coordinator';
	$node->safe_psql('app', "UPDATE pg_catalog.pg_dist_local_group SET groupid = $group");
	my $err = refused(q{SELECT idempotency.claim('r', 'lapsed')});
	like($err, qr/ERROR:  0A000: cannot take over idempotency key "lapsed" in scope "r": idempotency.keys is distributed with 2 copies of a shard \(citus.shard_replication_factor > 1\)/,
		"$where: a takeover is refused with 0A000 naming the setting");
	like($err, qr/HINT:  Distribute idempotency.keys, and the tables co-located with it, with citus.shard_replication_factor = 1/,
		"$where: the hint says what to do");
	my ($ret, $out, $warn) = $node->psql('app', "SELECT outcome FROM idempotency.claim('r', 'new-$group')");
	is($out, 'claimed', "$where: a new key is still claimed (a 1.1 cluster on this layout keeps working)");
	like($warn, qr/WARNING:  idempotency.keys is distributed with 2 copies of a shard .*taking over an expired key or a lapsed lease will be refused/,
		"$where: with a WARNING that takeovers will be refused");
}
my (undef, undef, $warnings) = $node->psql('app',
	"SELECT idempotency.claim('r', 'w1') IS NOT NULL; SELECT idempotency.claim('r', 'w2') IS NOT NULL");
is(scalar(() = $warnings =~ /WARNING/g), 1, 'the WARNING comes once per backend');
like(refused(q{SELECT idempotency.once('r', 'expired')}), qr/0A000: cannot process idempotency key "expired"/,
	'once() of an expired key is refused alike');
is($node->safe_psql('app', q{SELECT outcome FROM idempotency.claim('r', 'done')}), 'replay', 'a replay still answers');
is($node->safe_psql('app', q{SELECT outcome FROM idempotency.claim('r', 'flying')}), 'in_progress',
	'a key in flight still answers in_progress');
is($node->safe_psql('app', q{SELECT idempotency.finish('r', 'flying', 6, 201)}), 't',
	'the key in flight can be finished');
is($node->safe_psql('app', q{SELECT idempotency.once('r', 'done')}), 'f', 'once() of a processed key answers false');
is($node->safe_psql('app', q{SELECT (idempotency.lookup('r', 'done')).state}), 'completed', 'lookup() works');
is($node->safe_psql('app', q{SELECT count(*) FROM idempotency.keys WHERE scope = 'r' AND key IN ('lapsed', 'expired') AND token IN (7, 8)}), '2',
	'nothing was taken (the lapsed and the expired key are as they were)');

$node->safe_psql('app', q{UPDATE pg_catalog.pg_dist_partition SET partmethod = 'n'});
is($node->safe_psql('app', q{SELECT outcome FROM idempotency.claim('r', 'expired')}), 'claimed',
	'a reference table (a copy on every node; Citus locks its rows) is not refused');
$node->safe_psql('app', q{UPDATE pg_catalog.pg_dist_partition SET partmethod = 'h';
	DELETE FROM pg_catalog.pg_dist_placement WHERE groupid = 2 AND shardid IN (102008, 102009)});
like(refused(q{SELECT idempotency.claim('r', 'lapsed')}), qr/0A000: cannot take over .* 2 copies of a shard/,
	'one shard with a second copy is enough to refuse');
$node->safe_psql('app', q{DELETE FROM pg_catalog.pg_dist_placement WHERE shardid = 102011 AND groupid = 1});
is($node->safe_psql('app', q{SELECT outcome FROM idempotency.claim('r', 'lapsed')}), 'claimed',
	'one copy of each shard again: takeovers work');

$node->stop;
done_testing();
