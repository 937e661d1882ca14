# Helpers for the hot standby and failover TAP tests: a preloaded primary
# that allows streaming, and a streaming standby of it.
package PgiStandby;

use strict;
use warnings;
use Exporter 'import';
use IPC::Run;
use Time::HiRes qw(time);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;

our @EXPORT = qw(new_primary new_standby sql_error start_load finish_load key_list_sql);

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

# Starts $clients psql clients against $node's database 'app', each running up
# to $n transactions on keys "$prefix-<client>-<i>" of scope 'fo' (lease 3 s).
# Even clients: claim + business insert + finish in one transaction. Odd
# clients: claim and commit, then business insert + finish in a second
# transaction (work with outside side effects). After each COMMIT that returned
# the client prints "claimed KEY" / "finished KEY": those commits were
# acknowledged. Returns a handle for finish_load.
sub start_load
{
	my ($node, $prefix, $clients, $n) = @_;
	my $dir = $PostgreSQL::Test::Utils::tmp_check;
	my @runs;
	for my $c (1 .. $clients)
	{
		my $two_step = $c % 2;
		my $script = "$dir/load_$prefix-$c.sql";
		open my $fh, '>', $script or die "$script: $!";
		print $fh "\\set ON_ERROR_STOP 1\n";
		for my $i (1 .. $n)
		{
			my $k = "$prefix-$c-$i";
			print $fh "BEGIN;\nSELECT token AS tok FROM idempotency.claim('fo', '$k', lease => '3 s') \\gset\n";
			print $fh "COMMIT;\n\\echo claimed $k\nBEGIN;\n" if $two_step;
			print $fh "INSERT INTO biz VALUES ('$k', $i);\n",
			  "SELECT idempotency.finish('fo', '$k', :tok, 201, convert_to('{\"k\":\"$k\"}', 'UTF8'));\n",
			  "COMMIT;\n\\echo finished $k\n";
		}
		close $fh;
		my $out = "$dir/load_$prefix-$c.out";
		my $h = IPC::Run::start(
			[ 'psql', '-X', '-q', '-At', '-d', $node->connstr('app'), '-f', $script ],
			'>', $out, '2>', "$out.err");
		push @runs, { handle => $h, out => $out, prefix => $prefix, client => $c, n => $n };
	}
	return \@runs;
}

# Waits (bounded: 60 s, then kills) for the clients to end. Returns
# { finished => [keys], claimed => [keys], unacked => [keys in flight] }:
# a client's in-flight key is the one after its last acknowledged finish.
sub finish_load
{
	my ($runs) = @_;
	my $deadline = time + 60;
	for my $r (@$runs)
	{
		# A client that lost its server exits non-zero: expected here.
		while (time < $deadline && eval { $r->{handle}->pumpable })
		{
			select(undef, undef, undef, 0.05);
			eval { $r->{handle}->pump_nb };
		}
		eval { $r->{handle}->pumpable } ? $r->{handle}->kill_kill : eval { $r->{handle}->finish };
	}
	my (@finished, @claimed, @unacked);
	for my $r (@$runs)
	{
		open my $fh, '<', $r->{out} or die;
		my ($nf, $nc) = (0, 0);
		while (<$fh>)
		{
			if (/^claimed (\S+)/) { push @claimed, $1; $nc++; }
			elsif (/^finished (\S+)/) { push @finished, $1; $nf++; }
		}
		close $fh;
		push @unacked, "$r->{prefix}-$r->{client}-" . ($nf + 1) if $nf < $r->{n};
	}
	return { finished => \@finished, claimed => \@claimed, unacked => \@unacked };
}

# "VALUES ('k1'), ('k2'), ..." for a temp table of keys.
sub key_list_sql
{
	my ($keys) = @_;
	return @$keys ? 'VALUES ' . join(', ', map { "('$_')" } @$keys) : "SELECT 'none' WHERE false";
}

1;
