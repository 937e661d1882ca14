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
#     once with wait 0, and is claimed once the holder ends within wait
#     (the NOWAIT polling used on Citus tables).
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
$node->safe_psql('app', q{
	INSERT INTO idempotency.keys (scope, key, state, token, attempt, created_at, expires_at, locked_until)
	VALUES ('t', 'held', 'in_progress', 1, 1, now() - interval '2 hours', now() + interval '1 hour',
	        now() - interval '1 minute')});
my $holder = $node->background_psql('app');
$holder->query_safe(q{BEGIN; SELECT 1 FROM idempotency.keys WHERE scope = 't' AND key = 'held' FOR UPDATE;});
my $t0 = time;
is($node->safe_psql('app', q{SET statement_timeout = '20s'; SELECT outcome FROM idempotency.claim('t', 'held')}),
	'in_progress', 'wait 0: a row another transaction holds answers in_progress');
cmp_ok(time - $t0, '<', 10, '... without waiting for the holder');
my $claimer = $node->background_psql('app');
$claimer->query_until(qr/started/, q{
	\echo started
	SELECT outcome || '/' || attempt FROM idempotency.claim('t', 'held', NULL, NULL, NULL, '60 seconds');
});
ok(defined wait_until(sub {
	$node->safe_psql('app', "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%60 seconds%' AND state = 'active'"
		  . " AND pid <> pg_backend_pid()") eq '1' }, 10), 'a claim with a wait is waiting');
$holder->query_safe('COMMIT');
$holder->quit;
$claimer->quit;
is($node->safe_psql('app', "SELECT state || '/' || attempt FROM idempotency.keys WHERE scope = 't' AND key = 'held'"),
	'in_progress/2', 'the waiting claim took the key over once the holder ended');

$node->stop;
done_testing();
