#!/usr/bin/perl
# Load and loss counting for bench/failover/run. Every client records a key
# only after the server acknowledged it, one line per key, unbuffered, so the
# files hold exactly what an application would believe is stored.
#
#   clients.pl redis PORT CLIENTS SECONDS OUTDIR [WAIT_MS]
#       SET key 1 NX EX 3600 on 127.0.0.1:PORT; with WAIT_MS, each SET is
#       followed by WAIT 1 WAIT_MS and the key counts only if a replica
#       confirmed it (WAIT answered >= 1).
#   clients.pl redis-lost PORT FILE...    acknowledged keys missing on 127.0.0.1:PORT
#   clients.pl pg-scripts OUTDIR CLIENTS   writes the psql clients' scripts
#   clients.pl pg CONNINFO CLIENTS OUTDIR
#       psql clients: claim + business insert + finish per transaction (20000
#       per client at most); a key counts once its COMMIT returned.
# Redis loops end after SECONDS or 200000 keys per client; every loop ends
# when the server goes away.
use strict;
use warnings;
use IO::Socket::INET;
use IO::Handle;
use Time::HiRes qw(time);

my $mode = shift // die "usage: see the header\n";

sub redis_connect
{
	my ($port) = @_;
	return IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => 5);
}

sub resp_command
{
	my @a = @_;
	return '*' . scalar(@a) . "\r\n" . join('', map { '$' . length($_) . "\r\n$_\r\n" } @a);
}

# One RESP reply line (simple string, error, integer or bulk header); undef on EOF.
sub resp_reply
{
	my ($s) = @_;
	my $line = <$s>;
	return undef unless defined $line;
	if ($line =~ /^\$(-?\d+)/ && $1 >= 0)
	{
		my $buf = '';
		read($s, $buf, $1 + 2);
		return '$' . substr($buf, 0, $1);
	}
	$line =~ s/\r\n$//;
	return $line;
}

sub spawn_clients
{
	my ($n, $body) = @_;
	my @pids;
	for my $c (1 .. $n)
	{
		my $pid = fork // die "fork: $!";
		if ($pid == 0) { $body->($c); exit 0; }
		push @pids, $pid;
	}
	waitpid($_, 0) for @pids;
}

if ($mode eq 'redis')
{
	my ($port, $clients, $seconds, $outdir, $wait_ms) = @ARGV;
	spawn_clients($clients, sub {
		my ($c) = @_;
		my $s = redis_connect($port) or exit 1;
		open my $out, '>', "$outdir/acked.$c" or die;
		$out->autoflush(1);
		my $deadline = time + $seconds;
		for (my $i = 1; $i <= 200000 && time < $deadline; $i++)
		{
			my $key = "k:$c:$i";
			print $s resp_command('SET', $key, '1', 'NX', 'EX', '3600');
			my $r = resp_reply($s) // last;
			next unless $r eq '+OK';
			if (defined $wait_ms)
			{
				print $s resp_command('WAIT', '1', $wait_ms);
				my $w = resp_reply($s) // last;
				next unless $w =~ /^:(\d+)/ && $1 >= 1;
			}
			print $out "$key\n";
		}
	});
}
elsif ($mode eq 'redis-lost')
{
	my ($port, @files) = @ARGV;
	my $s = redis_connect($port) or die "cannot reach the promoted replica\n";
	my ($acked, $lost) = (0, 0);
	for my $f (@files)
	{
		open my $in, '<', $f or die;
		chomp(my @keys = <$in>);
		close $in;
		while (my @batch = splice(@keys, 0, 1000))
		{
			print $s resp_command('EXISTS', $_) for @batch;
			for (@batch) { $acked++; $lost++ if resp_reply($s) eq ':0'; }
		}
	}
	print "$acked $lost\n";
}
elsif ($mode eq 'pg-scripts')
{
	# Written ahead, so that the load starts at once when the clients do.
	my ($outdir, $clients) = @ARGV;
	for my $c (1 .. $clients)
	{
		open my $fh, '>', "$outdir/load.$c.sql" or die;
		print $fh "\\set ON_ERROR_STOP 1\n";
		for my $i (1 .. 20000)
		{
			my $k = "k:$c:$i";
			print $fh "BEGIN;\nSELECT token AS tok FROM idempotency.claim('fo', '$k') \\gset\n",
			  "INSERT INTO biz VALUES ('$k');\n",
			  "SELECT idempotency.finish('fo', '$k', :tok, 201, convert_to('{\"k\":\"$k\"}', 'UTF8')) \\g /dev/null\n",
			  "COMMIT;\n\\echo $k\n";
		}
		close $fh;
	}
}
elsif ($mode eq 'pg')
{
	my ($conninfo, $clients, $outdir) = @ARGV;
	spawn_clients($clients, sub {
		my ($c) = @_;
		# psql prints each "\echo KEY" to stdout after its COMMIT returned.
		open(STDOUT, '>', "$outdir/acked.$c") or die;
		open(STDERR, '>', "$outdir/err.$c") or die;
		# No timer here: a signal would lose psql's buffered output. The
		# fault ends the load (psql stops at the first error and flushes);
		# bench/failover/run kills what is left after its deadline.
		exec('psql', '-X', '-q', '-At', '-d', $conninfo, '-f', "$outdir/load.$c.sql");
	});
}
else { die "unknown mode $mode\n"; }
