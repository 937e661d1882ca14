# Crashes: kill -9 of a sweeper worker (the postmaster restarts every process;
# the sweeper comes back and no committed key is lost) and an immediate
# shutdown in the middle of claiming and sweeping.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use Time::HiRes qw(time usleep);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PgiTest;

my $node = new_node('crash', 'restart_after_crash = on');
$node->safe_psql('postgres', 'CREATE DATABASE app');
$node->safe_psql('app', 'CREATE EXTENSION pg_idempotency');

# Claims and finishes, one transaction per key, acknowledged one by one.
sub commit_keys
{
	my ($scope, $n) = @_;
	$node->safe_psql('app', qq{
		DO \$\$ DECLARE t bigint; BEGIN
		  FOR i IN 1..$n LOOP
		    SELECT token INTO t FROM idempotency.claim('$scope', 'k' || i);
		    PERFORM idempotency.finish('$scope', 'k' || i, t, 201, convert_to('{"id":' || i || '}', 'UTF8'));
		    COMMIT;
		  END LOOP;
		END \$\$});
}

# --- kill -9 of a sweeper worker
commit_keys('before9', 500);
# Small batches make a long turn, so that a worker is there to be killed.
set_and_reload($node, 'idempotency.sweep_batch_size', 20);
insert_expired($node, 'app', 'old', 20000);
my $pid = wait_for_sweeper($node, 'app', 10);
ok($pid ne '', 'sweeper running');
my $offset = -s $node->logfile;
kill 'KILL', $pid;
ok($node->wait_for_log(qr/terminated by signal 9/, $offset), 'the postmaster saw the sweeper die');
ok($node->wait_for_log(qr/database system is ready to accept connections/, $offset), 'crash recovery done');
my $new_pid = wait_for_sweeper($node, 'app', 20, $pid);
ok($new_pid ne '' && $new_pid ne $pid, 'a sweeper worker is back in the database after kill -9');
set_and_reload($node, 'idempotency.sweep_batch_size', undef);
is(key_count($node, 'app', "scope = 'before9'"), '500', 'no committed key lost');
is($node->safe_psql('app', q{SELECT count(*) FROM idempotency.keys
		WHERE scope = 'before9' AND state = 'completed' AND response_status = 201}), '500',
	'and every one still holds its response');
ok(defined wait_until(sub { key_count($node, 'app', "scope = 'old'") == 0 }, 10),
	'expired keys are swept after the restart');
is($node->safe_psql('app', q{SELECT (idempotency.claim('before9', 'k7')).outcome}), 'replay',
	'a finished key replays after the crash');

# --- immediate shutdown while clients claim and the sweeper sweeps
insert_expired($node, 'app', 'old2', 100000);
my $script = "$PostgreSQL::Test::Utils::tmp_check/claims.sql";
PostgreSQL::Test::Utils::append_to_file($script, q{
\set r random(1, 1000000000)
BEGIN;
SELECT token AS tok FROM idempotency.claim('live', 'k' || :client_id || '-' || :r) \gset
SELECT idempotency.finish('live', 'k' || :client_id || '-' || :r, :tok, 200);
COMMIT;
});
# pgbench's per-transaction log (-l) gets a line only after COMMIT returned:
# those keys were acknowledged to the client and must survive.
my $logprefix = "$PostgreSQL::Test::Utils::tmp_check/crashlog";
my ($out, $err) = ('', '');
my $pgbench = IPC::Run::start(
	[ 'pgbench', '-n', '-c', '2', '-j', '1', '-T', '20', '-f', $script, '-l', '--log-prefix', $logprefix,
	  '-h', $node->host, '-p', $node->port, 'app' ],
	'>', \$out, '2>', \$err);
usleep(1_500_000);
$node->stop('immediate');
$pgbench->finish;
my $acknowledged = 0;
foreach my $f (glob("$logprefix*"))
{
	open my $fh, '<', $f or die;
	while (<$fh>) { $acknowledged++ if /^\d+ \d+ \d+ 0 /; }
	close $fh;
}
note("claims acknowledged before the immediate shutdown: $acknowledged");
$node->start;
my $stored = key_count($node, 'app', "scope = 'live' AND state = 'completed'");
cmp_ok($acknowledged, '>', 0, 'clients committed keys before the shutdown');
cmp_ok($stored, '>=', $acknowledged, 'every acknowledged key survived the immediate shutdown');
note("completed keys after restart: $stored (acknowledged $acknowledged; the rest committed but unacknowledged)");
cmp_ok($stored, '<=', $acknowledged + 2, 'at most one unacknowledged commit per client');
is(key_count($node, 'app', "scope = 'before9'"), '500', 'older keys still there');
ok(defined wait_until(sub { key_count($node, 'app', "scope = 'old2'") == 0 }, 20),
	'the sweeper is back after the restart and finishes the sweep');

$node->stop('fast');
done_testing();
