# Sweepers run only on a primary: a streaming standby of a preloaded primary
# starts no pg_idempotency process and writes nothing about it to its log,
# while the primary sweeps and the standby replays the deletions; once
# promoted, the standby starts its launcher and sweeps by itself.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use Time::HiRes qw(time usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PgiTest;

my $conf = join("\n",
	"shared_preload_libraries = 'pg_idempotency'",
	"idempotency.sweep_interval = '1s'",
	"fsync = off",
	"log_timezone = 'UTC'") . "\n";
my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', $conf);
$primary->start;
$primary->safe_psql('postgres', 'CREATE DATABASE app');
$primary->safe_psql('app', 'CREATE EXTENSION pg_idempotency');
$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
$standby->start;
is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 't', 'the standby is in recovery');

sub idempotency_processes
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'pg_idempotency%'");
}

# The primary sweeps; the standby replays the deletions and runs nothing.
insert_expired($primary, 'app', 'old', 2000);
ok(defined wait_swept($primary, 'app', 'old', 10), 'the primary sweeps');
$primary->wait_for_catchup($standby);
is(key_count($standby, 'app', "scope = 'old'"), '0', 'the standby replays the deletions');
my $seen = 0;
wait_until(sub { $seen += idempotency_processes($standby); 0 }, 2);
is($seen, 0, 'no pg_idempotency process ever runs on the standby');
is(idempotency_processes($primary) >= 1 ? 1 : 0, 1, 'while the primary has its launcher');
# (The test's own statements are logged too: log_statement = all.)
my @mentions = grep { !/ statement: / && /idempotency/i } split /\n/,
  PostgreSQL::Test::Utils::slurp_file($standby->logfile);
is(scalar @mentions, 0, 'the standby\'s log says nothing about the sweeper') or diag(join("\n", @mentions));
like(PostgreSQL::Test::Utils::slurp_file($primary->logfile), qr/pg_idempotency launcher started/,
	'(the primary\'s does)');

# Keys that expire on the primary, which then stops: promote the standby.
insert_expired($primary, 'app', 'orphan', 500);
$primary->safe_psql('postgres', "ALTER SYSTEM SET idempotency.sweeper = off");
$primary->reload;
usleep(200_000);
insert_expired($primary, 'app', 'orphan2', 500);
$primary->wait_for_catchup($standby);
$primary->stop('immediate');
my $offset = -s $standby->logfile;
$standby->promote;
ok($standby->wait_for_log(qr/pg_idempotency launcher started/, $offset), 'after promotion the launcher starts');
ok(defined wait_swept($standby, 'app', 'orphan2', 15), 'and the new primary sweeps the expired keys');

$standby->stop('fast');
done_testing();
