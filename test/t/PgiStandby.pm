# Helpers for the hot standby and failover TAP tests: a preloaded primary
# that allows streaming, and a streaming standby of it.
package PgiStandby;

use strict;
use warnings;
use Exporter 'import';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;

our @EXPORT = qw(new_primary new_standby sql_error);

my @common_conf = (
	"shared_preload_libraries = 'pg_idempotency'",
	"idempotency.sweep_interval = '1s'",
	"fsync = off",
	"max_worker_processes = 16",
	"max_connections = 60",
	"log_timezone = 'UTC'");

# A preloaded primary with the extension in database 'app', started.
sub new_primary
{
	my ($name, @conf) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(allows_streaming => 1);
	$node->append_conf('postgresql.conf', join("\n", @common_conf, @conf) . "\n");
	$node->start;
	$node->safe_psql('postgres', 'CREATE DATABASE app');
	$node->safe_psql('app', 'CREATE EXTENSION pg_idempotency');
	return $node;
}

# A streaming hot standby of $primary (from a fresh base backup), started and
# caught up.
sub new_standby
{
	my ($primary, $name, @conf) = @_;
	my $backup = "b_$name";
	$primary->backup($backup);
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init_from_backup($primary, $backup, has_streaming => 1);
	$node->append_conf('postgresql.conf', join("\n", "cluster_name = '$name'", @conf) . "\n");
	$node->start;
	$primary->wait_for_catchup($node);
	return $node;
}

# Runs $sql on $node/$db with verbose errors; returns "SQLSTATE: message ...
# HINT ..." (the whole stderr), or '' when it succeeded.
sub sql_error
{
	my ($node, $db, $sql) = @_;
	my ($ret, $out, $err) = $node->psql($db, "\\set VERBOSITY verbose\n$sql");
	return $ret == 0 ? '' : $err;
}

1;
