# The sweeper pool on a server with default max_worker_processes (8) and the
# extension in 22 databases, each with expired keys: every database is swept;
# the pg_idempotency processes sampled never exceed max_sweepers + 1; a
# parallel query gets its workers while the sweepers run. Then a server with
# too few slots: the launcher leaves the last free one to the rest, says so at
# most once a minute, and still sweeps every database.
#
# No assertion depends on how fast the machine is (it failed under load when
# it did): the waits are hang guards, not bounds. The bound on the time between
# two turns of a database, sweep_interval x ceil(databases / max_sweepers), is
# the schedule's and is tested without a server (SweepSchedule.* in
# test/cxx/sweep_schedule_test.cpp); here the time taken is only noted.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use POSIX qw(ceil);
use Time::HiRes qw(time usleep);
use Time::Local qw(timegm);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PgiTest;

my $ndb = 22;
my $interval_s = 2;
my $max_sweepers = 2;
my $bound_s = $interval_s * ceil($ndb / $max_sweepers);
# How long a wait may last before the test gives up: a hang, not slowness.
my $hang_s = 300;

my $node = new_node('many', 'max_worker_processes = 8', "idempotency.sweep_interval = '${interval_s}s'",
	'idempotency.sweeper = off', 'max_parallel_workers_per_gather = 2');
is($node->safe_psql('postgres', 'SHOW max_worker_processes'), '8', 'default max_worker_processes');
is($node->safe_psql('postgres', 'SHOW idempotency.max_sweepers'), $max_sweepers, 'max_sweepers defaults to 2');

# One template with the extension and 200 expired keys; 22 copies of it.
$node->safe_psql('postgres', 'CREATE DATABASE tmpl');
$node->safe_psql('tmpl', 'CREATE EXTENSION pg_idempotency');
insert_expired($node, 'tmpl', 'old', 200);
$node->safe_psql('postgres', 'ALTER DATABASE tmpl IS_TEMPLATE true');
$node->safe_psql('postgres', "CREATE DATABASE db$_ TEMPLATE tmpl STRATEGY file_copy") for 1 .. $ndb;
# db1 has a backlog: 100 000 expired keys more, swept in 2 000-key batches.
insert_expired($node, 'db1', 'big', 100_000);
$node->safe_psql('postgres', 'ALTER SYSTEM SET idempotency.sweep_batch_size = 2000');
# A table for parallel query, and the sampler's stop flag.
$node->safe_psql('postgres', q{
	CREATE TABLE big AS SELECT g AS id FROM generate_series(1, 300000) g;
	ANALYZE big;
	CREATE TABLE sampler_stop (stop bool)});

# Samples the pg_idempotency processes every 10 ms until stop_sampler (or
# $hang_s seconds), so it covers what it watches however long that takes.
sub start_sampler
{
	my ($out, $err) = @_;
	$node->safe_psql('postgres', 'TRUNCATE sampler_stop');
	my $sql = qq{
DO \$\$
DECLARE n int; most int := 0; samples int := 0; t0 timestamptz := clock_timestamp();
BEGIN
  WHILE clock_timestamp() < t0 + interval '$hang_s s' AND NOT EXISTS (SELECT FROM sampler_stop) LOOP
    PERFORM pg_stat_clear_snapshot();
    SELECT count(*) INTO n FROM pg_stat_activity WHERE backend_type LIKE 'pg_idempotency%';
    most := greatest(most, n);
    samples := samples + 1;
    PERFORM pg_sleep(0.01);
  END LOOP;
  RAISE NOTICE 'samples=% most=%', samples, most;
END \$\$;};
	return IPC::Run::start([ 'psql', '-X', '-q', '-h', $node->host, '-p', $node->port, '-d', 'postgres', '-c', $sql ],
		'>', $out, '2>', $err);
}

# Stops the sampler; returns (samples, most).
sub stop_sampler
{
	my ($sampler, $err) = @_;
	$node->safe_psql('postgres', 'INSERT INTO sampler_stop VALUES (true)');
	$sampler->finish;
	return $$err =~ /samples=(\d+) most=(\d+)/;
}

sub sweeper_pids
{
	return split /\n/, $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_idempotency sweeper'");
}

# Waits until every sweeper running now has ended, and then $turns sweepers
# started after that have ended too (sweepers come and go all the time with
# 22 databases due every sweep_interval). True unless it hangs.
sub wait_for_turns
{
	my ($turns) = @_;
	my %old = map { $_ => 1 } sweeper_pids();
	return 0 unless defined wait_until(sub { !grep { $old{$_} } sweeper_pids() }, $hang_s);
	for (1 .. $turns)
	{
		my @new;
		return 0 unless defined wait_until(sub { @new = grep { !$old{$_} } sweeper_pids(); @new > 0 }, $hang_s);
		$old{$_} = 1 for @new;
		return 0 unless defined wait_until(sub { my %now = map { $_ => 1 } sweeper_pids(); !grep { $now{$_} } @new }, $hang_s);
	}
	return 1;
}

# Epoch seconds of a log line's timestamp (log_line_prefix %m, log_timezone UTC).
sub log_time
{
	my ($line) = @_;
	my ($y, $mo, $d, $h, $mi, $s) = $line =~ /^(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d(?:\.\d+)?)/ or return undef;
	return timegm(0, $mi, $h, $d, $mo - 1, $y) + $s;
}

# Databases named in "deleted N expired keys" LOG lines since $offset.
sub swept_databases
{
	my ($offset) = @_;
	my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile, $offset);
	my %seen = map { $_ => 1 } $log =~ /pg_idempotency sweeper: deleted \d+ expired keys in database "(db\d+)"/g;
	return \%seen;
}

sub parallel_workers
{
	my $plan = $node->safe_psql('postgres', q{
		SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0;
		EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) SELECT count(*) FROM big});
	my ($planned) = $plan =~ /Workers Planned: (\d+)/;
	my ($launched) = $plan =~ /Workers Launched: (\d+)/;
	return ($planned // 0, $launched // 0);
}

# --- round 1: the sweeper is turned on with every database full of expired keys
my ($smp_out, $smp_err) = ('', '');
my $sampler = start_sampler(\$smp_out, \$smp_err);
my $offset = -s $node->logfile;
$node->safe_psql('postgres', 'ALTER SYSTEM SET idempotency.sweeper = on');
my $t0 = time;
$node->reload;
my ($all_planned, $all_launched, $queries) = (0, 0, 0);
my $elapsed = wait_until(sub {
	if ($queries < 5)
	{
		my ($p, $l) = parallel_workers();
		$all_planned += $p;
		$all_launched += $l;
		$queries++;
	}
	return keys %{ swept_databases($offset) } == $ndb;
}, $hang_s);
ok(defined $elapsed, "every one of $ndb databases swept")
  or diag('swept: ' . join(' ', sort keys %{ swept_databases($offset) }));
note(sprintf('round 1: all %d databases swept once %.2f s after the sweeper was turned on '
	  . '(the bound: sweep_interval x ceil(%d / %d) = %d s)', $ndb, $elapsed // -1, $ndb, $max_sweepers, $bound_s));
cmp_ok($queries, '>=', 1, 'parallel queries ran while the sweepers ran');
is($all_launched, $all_planned, "a parallel query launches every worker it planned ($all_launched of $all_planned)");
cmp_ok($all_planned, '>', 0, 'and it planned some');
ok(defined wait_until(sub { key_count($node, 'db1', "scope = 'big'") == 0 }, $hang_s), 'the backlog of db1 is swept too');
my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile, $offset);
my $db1_turns = () = $log =~ /deleted \d+ expired keys in database "db1"/g;
note("db1 (100 200 keys) took $db1_turns turns");

# --- round 2: expired keys again everywhere, with the sweepers already running
$offset = -s $node->logfile;
$t0 = time;
insert_expired($node, "db$_", 'again', 50) for 1 .. $ndb;
$elapsed = wait_until(sub { keys %{ swept_databases($offset) } == $ndb }, $hang_s);
my $since = time - $t0;
ok(defined $elapsed, "round 2: every database swept again")
  or diag('swept: ' . join(' ', sort keys %{ swept_databases($offset) }));
note(sprintf('round 2: all databases swept %.2f s after the first insert', $since));

my ($samples, $most) = stop_sampler($sampler, \$smp_err);
cmp_ok($most // 0, '>=', 2, "the sampler saw the launcher and a sweeper at work ($samples samples)");
cmp_ok($most // 99, '<=', $max_sweepers + 1, "at most max_sweepers + 1 pg_idempotency processes at once (most: $most)");

# --- max_sweepers is a sighup setting. The launcher applies it when it next
# wakes after the postmaster's signal; until then, and until the sweepers it
# started before (and the extra one it stops) have ended, two may still run.
# So the sampling starts once the postmaster has logged the change and the
# sweepers running then, and three started after them, have ended.
$offset = -s $node->logfile;
$node->safe_psql('postgres', 'ALTER SYSTEM SET idempotency.max_sweepers = 1');
$node->reload;
ok(defined wait_until(sub {
	PostgreSQL::Test::Utils::slurp_file($node->logfile, $offset) =~ /parameter "idempotency.max_sweepers" changed to "1"/
}, $hang_s) && wait_for_turns(3), 'the reload reached the launcher and its sweepers took turns since');
($smp_out, $smp_err) = ('', '');
$sampler = start_sampler(\$smp_out, \$smp_err);
insert_expired($node, "db$_", 'one', 50) for 1 .. 6;
my $swept_on = defined wait_until(sub { key_count($node, 'db6', "scope = 'one'") == 0 }, $hang_s);
($samples, $most) = stop_sampler($sampler, \$smp_err);
cmp_ok($most // 99, '<=', 2, "max_sweepers = 1 after SIGHUP: at most 2 processes (most: $most, $samples samples)");
ok($swept_on, 'and sweeping goes on');

# --- too few slots: 4, of which the logical replication launcher and ours take 2
$node->safe_psql('postgres', 'ALTER SYSTEM SET max_worker_processes = 4');
$node->safe_psql('postgres', 'ALTER SYSTEM SET idempotency.max_sweepers = 3');
$offset = -s $node->logfile;
$node->restart;
($smp_out, $smp_err) = ('', '');
$sampler = start_sampler(\$smp_out, \$smp_err);
insert_expired($node, "db$_", 'tight', 50) for 1 .. $ndb;
ok(defined wait_until(sub { keys %{ swept_databases($offset) } == $ndb }, $hang_s),
	'with 2 free slots of 4, every database is still swept');
($samples, $most) = stop_sampler($sampler, \$smp_err);
cmp_ok($most // 99, '<=', 2, "the launcher plus one sweeper: the last free slot is left to others (most: $most)");
my ($p, $l) = parallel_workers();
cmp_ok($l, '>=', 1, "a parallel query still gets a worker ($l of $p)");
$log = PostgreSQL::Test::Utils::slurp_file($node->logfile, $offset);
my @warned = map { log_time($_) } grep { /no free background worker slot for a sweeper/ } split /\n/, $log;
cmp_ok(scalar @warned, '>=', 1, "'no free slot' is logged");
# At most once a minute, by the log's own timestamps (the launcher counts
# from the start of the round that logged, a moment before the line).
my @gaps = map { $warned[$_] - $warned[ $_ - 1 ] } 1 .. $#warned;
ok(!grep({ !defined $_ || $_ < 59 } @gaps) && !grep({ !defined $_ } @warned),
	sprintf("and at most once a minute (%d times, gaps: %s s)", scalar @warned, join(', ', map { sprintf '%.1f', $_ } @gaps) || 'none'));

$node->stop('fast');
done_testing();
