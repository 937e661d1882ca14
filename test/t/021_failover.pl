# Failover under load: 12 clients claim + insert a business row + finish
# (half of them in one transaction, half claim first and finish in a second
# one) against a primary with a synchronous streaming standby; the primary is
# killed (kill -9 of the postmaster, then separately an immediate stop) and the
# standby promoted. On the new primary every acknowledged finish is there with
# its response and business row, in-flight keys are absent or in_progress and
# taken over after their lease, the sweeper runs and claims go on. The same
# load against an asynchronous standby reports what it loses (not asserted).
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use Time::HiRes qw(time usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PgiTest qw(wait_until insert_expired key_count sweeper_pid);
use PgiStandby;

my $clients = 12;

# Runs $sql on $node's 'app' with a temp table $table (key text) holding @$keys.
sub over_keys
{
	my ($node, $table, $keys, $sql) = @_;
	return $node->safe_psql('app', "CREATE TEMP TABLE $table (key text); INSERT INTO $table "
		  . key_list_sql($keys) . ";\n$sql");
}

sub failover
{
	my ($name, $sync, $fault) = @_;
	my $standby_name = "${name}_s";
	my $primary = new_primary("${name}_p");
	$primary->safe_psql('app', 'CREATE TABLE biz (key text PRIMARY KEY, amount int NOT NULL)');
	my $standby = new_standby($primary, $standby_name);
	if ($sync)
	{
		# Only once the standby streams: a commit before that would wait for it.
		$primary->safe_psql('postgres', "ALTER SYSTEM SET synchronous_standby_names = '$standby_name'");
		$primary->reload;
		$primary->poll_query_until('postgres', "SELECT sync_state = 'sync' FROM pg_stat_replication")
		  or die "$name: the standby did not become synchronous";
		is($primary->safe_psql('postgres', 'SELECT sync_state FROM pg_stat_replication'), 'sync',
			"$name: the standby is synchronous");
	}
	is(sweeper_pid($standby, 'app'), '', "$name: no sweeper on the standby");

	my $load = start_load($primary, $name, $clients, 3000);
	# Mid-load: once some work is committed (bounded wait), the fault.
	wait_until(sub { $primary->safe_psql('app', 'SELECT count(*) FROM biz') >= 300 }, 60)
	  or die "$name: the load did not get going";
	if ($fault eq 'kill9') { $primary->kill9; }
	else { $primary->stop('immediate'); }
	my $acks = finish_load($load);
	my $n_finished = scalar @{ $acks->{finished} };
	# The 300 committed rows counted may include one unacknowledged commit per client.
	ok($n_finished >= 300 - $clients, "$name: $n_finished acknowledged finishes before the fault");

	$standby->promote;
	$standby->poll_query_until('app', 'SELECT NOT pg_is_in_recovery()') or die "$name: promotion did not end";
	my $new = $standby;

	# Acknowledged finishes missing their completed key, response or business row.
	my $lost = over_keys($new, 'acked', $acks->{finished}, q{
		SELECT count(*) FROM acked a WHERE NOT EXISTS (
		  SELECT FROM idempotency.keys k JOIN biz b ON b.key = k.key
		  WHERE k.scope = 'fo' AND k.key = a.key AND k.state = 'completed' AND k.response_status = 201
		    AND convert_from(k.response_body, 'UTF8') = '{"k":"' || a.key || '"}'
		    AND b.amount = split_part(a.key, '-', 3)::int)});
	my $claims_lost = over_keys($new, 'acked', $acks->{claimed}, q{
		SELECT count(*) FROM acked a WHERE NOT EXISTS (
		  SELECT FROM idempotency.keys k WHERE k.scope = 'fo' AND k.key = a.key)});
	if ($sync)
	{
		is($lost, '0', "$name: every acknowledged finish is on the new primary with its response and business row");
		is($claims_lost, '0', "$name: every acknowledged claim is on the new primary");
	}
	else
	{
		diag("$name: asynchronous standby lost $lost of $n_finished acknowledged finishes "
			  . "and $claims_lost of " . scalar(@{ $acks->{claimed} }) . ' acknowledged claims');
		ok(1, "$name: asynchronous standby lost $lost of $n_finished acknowledged finishes (reported, not asserted)");
	}
	# Whatever survived is whole: a business row exactly where a key completed.
	is($new->safe_psql('app', q{
		SELECT count(*) FROM idempotency.keys k FULL JOIN biz b ON b.key = k.key AND k.scope = 'fo'
		WHERE (k.state = 'completed') IS DISTINCT FROM (b.key IS NOT NULL)}), '0',
		"$name: no completed key without its business row and no business row without its key");

	# In-flight keys: absent, or in_progress (a two-step claim that committed),
	# or completed (the commit was durable but its acknowledgement was lost).
	my $states = over_keys($new, 'inflight', $acks->{unacked}, q{
		SELECT coalesce(k.state::text, 'absent'), count(*) FROM inflight i
		LEFT JOIN idempotency.keys k ON k.scope = 'fo' AND k.key = i.key GROUP BY 1 ORDER BY 1});
	$states =~ s/\n/, /g;
	diag("$name: in-flight keys by state on the new primary: $states");
	my $held = $new->safe_psql('app', q{SELECT string_agg(key, ' ') FROM idempotency.keys
		WHERE scope = 'fo' AND state = 'in_progress'});
	my @held = split ' ', $held;
	my %inflight = map { $_ => 1 } @{ $acks->{unacked} };
	my $held_not_inflight = scalar(grep { !$inflight{$_} } @held);
	if ($sync) { is($held_not_inflight, 0, "$name: every key left in_progress was in flight"); }
	else
	{
		# An asynchronous standby may keep a claim and lose its acknowledged finish.
		diag("$name: $held_not_inflight keys in_progress whose finish was acknowledged but lost");
		ok(1, "$name: keys in_progress counted (reported, not asserted)");
	}
	# Taken over once their lease (3 s) is over, not before.
	if (@held)
	{
		my $k = $held[0];
		my $early = $new->safe_psql('app', qq{SELECT outcome FROM idempotency.claim('fo', '$k')
			WHERE (SELECT locked_until > now() + interval '200 ms' FROM idempotency.keys WHERE scope = 'fo' AND key = '$k')});
		ok($early eq '' || $early eq 'in_progress', "$name: an in_progress key is not taken over during its lease");
		ok(defined wait_until(sub { $new->safe_psql('app', q{SELECT bool_and(locked_until < now())
			FROM idempotency.keys WHERE scope = 'fo' AND state = 'in_progress'}) eq 't' }, 10),
			"$name: the leases run out");
		is($new->safe_psql('app', q{
			SELECT string_agg(DISTINCT c.outcome::text || '/' || c.attempt, ',')
			FROM idempotency.keys k, LATERAL idempotency.claim('fo', k.key) c
			WHERE k.scope = 'fo' AND k.state = 'in_progress'}), 'claimed/2',
			"$name: every in_progress key is taken over after its lease (attempt 2)");
	}
	else
	{
		ok(1, "$name: no in-flight key was left in_progress") for 1 .. 3;
	}
	my $absent_claims = over_keys($new, 'inflight', $acks->{unacked}, q{
		SELECT count(*) FILTER (WHERE c.outcome <> 'claimed' OR c.attempt <> 1) FROM inflight i
		CROSS JOIN LATERAL idempotency.claim('fo', i.key) c
		WHERE NOT EXISTS (SELECT FROM idempotency.keys k WHERE k.scope = 'fo' AND k.key = i.key)});
	is($absent_claims, '0', "$name: absent in-flight keys are claimed afresh");

	# The sweeper runs on the new primary.
	# (Workers come and go, one turn at a time: the launcher is what stays.)
	ok(defined wait_until(sub { $new->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_idempotency launcher'") eq '1' }, 15),
		"$name: the sweeper's launcher runs on the new primary");
	insert_expired($new, 'app', 'old', 500);
	ok(defined wait_until(sub { key_count($new, 'app', "scope = 'old'") == 0 }, 15),
		"$name: the sweeper sweeps on the new primary");

	# Claims go on: a short load to completion.
	my $after = finish_load(start_load($new, "$name-after", 4, 50));
	is(scalar @{ $after->{finished} }, 200, "$name: claims go on after failover (200 acknowledged)");
	is($new->safe_psql('app', qq{SELECT count(*) FROM idempotency.keys k JOIN biz b USING (key)
		WHERE k.scope = 'fo' AND k.key LIKE '$name-after-%' AND k.state = 'completed'}), '200',
		"$name: and every one is stored");
	$new->stop('fast');
	return ($lost, $n_finished);
}

failover('sync_kill9', 1, 'kill9');
failover('sync_immediate', 1, 'immediate');
failover('async_kill9', 0, 'kill9');
done_testing();
