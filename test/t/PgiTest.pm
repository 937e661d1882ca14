# Helpers shared by the pg_idempotency TAP tests (test/t/*.pl).
package PgiTest;

use strict;
use warnings;
use Exporter 'import';
use Time::HiRes qw(time usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

our @EXPORT = qw(new_node sweeper_pid wait_for_sweeper wait_no_sweeper insert_expired
  key_count wait_until set_and_reload wait_swept);

# A preloaded node with a short sweep interval, started.
sub new_node
{
	my ($name, @conf) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', join("\n",
		"shared_preload_libraries = 'pg_idempotency'",
		"idempotency.sweep_interval = '1s'",
		"fsync = off",
		"max_worker_processes = 16",
		"log_timezone = 'UTC'",
		@conf) . "\n");
	$node->start;
	return $node;
}

# Sweeper workers come and go: one connects to a database for a turn and
# exits. pid of the one connected to $db now, or '' if none.
sub sweeper_pid
{
	my ($node, $db) = @_;
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_idempotency sweeper' AND datname = '$db'");
}

# Polls $cond (a sub) every 50 ms until it is true or $timeout s pass.
# Returns the elapsed seconds, or undef on timeout.
sub wait_until
{
	my ($cond, $timeout) = @_;
	my $start = time;
	while (time - $start < $timeout)
	{
		return time - $start if $cond->();
		usleep(50_000);
	}
	return undef;
}

# Waits for a sweeper in $db (other than $old_pid) and returns its pid.
sub wait_for_sweeper
{
	my ($node, $db, $timeout, $old_pid) = @_;
	my $pid = '';
	wait_until(sub {
		$pid = sweeper_pid($node, $db);
		return $pid ne '' && (!defined $old_pid || $pid ne $old_pid);
	}, $timeout // 15);
	return $pid;
}

sub wait_no_sweeper
{
	my ($node, $db, $timeout) = @_;
	return defined wait_until(sub { sweeper_pid($node, $db) eq '' }, $timeout // 15);
}

# Inserts $n completed rows under $scope that expired an hour ago.
sub insert_expired
{
	my ($node, $db, $scope, $n) = @_;
	$node->safe_psql($db, qq{
		INSERT INTO idempotency.keys (scope, key, state, token, attempt, created_at, completed_at,
		                              expires_at, response_status, response_body)
		SELECT '$scope', 'k' || g, 'completed', g, 1, now() - interval '2 hours', now() - interval '2 hours',
		       now() - interval '1 hour', 200, convert_to(repeat('x', 80), 'UTF8')
		FROM generate_series(1, $n) AS g});
}

# Waits until no key of $scope is left in $db; returns the elapsed seconds or undef.
sub wait_swept
{
	my ($node, $db, $scope, $timeout) = @_;
	return wait_until(sub { key_count($node, $db, "scope = '$scope'") == 0 }, $timeout // 10);
}

sub key_count
{
	my ($node, $db, $where) = @_;
	$where //= 'true';
	return $node->safe_psql($db, "SELECT count(*) FROM idempotency.keys WHERE $where");
}

# ALTER SYSTEM SET name = value (undef: RESET) and reload.
sub set_and_reload
{
	my ($node, $name, $value) = @_;
	$node->safe_psql('postgres',
		defined $value ? "ALTER SYSTEM SET $name = '$value'" : "ALTER SYSTEM RESET $name");
	$node->reload;
}

1;
