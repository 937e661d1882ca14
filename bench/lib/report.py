#!/usr/bin/env python3
"""Helpers for bench/run: percentiles from pgbench logs, the final table, the plot.

  report.py lat START_EPOCH END_EPOCH LOGFILE...   -> "p50_us p99_us n" of the
        transactions that completed in [START, END] (END 0 = no end)
  report.py table OUTDIR                             -> prints the table, writes
        OUTDIR/table.md, OUTDIR/ratios.dat, OUTDIR/steady.dat plots
  report.py majors OUTDIR 15 17 18                   -> one column per major from
        OUTDIR/pgN/runs.tsv (bench/lib/majors.sh), writes OUTDIR/table.md
"""
import os
import statistics
import subprocess
import sys


def lat(args):
    start, end = float(args[0]), float(args[1])
    lats = []
    for path in args[2:]:
        with open(path) as f:
            for line in f:
                p = line.split()
                if len(p) < 6:
                    continue
                done = int(p[4]) + int(p[5]) / 1e6
                if done < start or (end > 0 and done > end):
                    continue
                lats.append(int(p[2]))
    if not lats:
        print("0 0 0")
        return
    lats.sort()
    def pct(q):
        return lats[min(len(lats) - 1, int(q * len(lats)))]
    print(f"{pct(0.50)} {pct(0.99)} {len(lats)}")


# (id, label, group, ours, baseline, unit, higher_is_better, target, target_text)
PAIRS = [
    ("1a", "1 new keys, sync_commit=off: ours / bare SQL", "new_off", "ours", "bare", "tps", True, 0.9, ">= 0.9"),
    ("1b", "1 new keys, sync_commit=off: ours / simple peer", "new_off", "ours", "simple", "tps", True, 1.0, ">= 1.0"),
    ("1c", "1 new keys, sync_commit=off: ours / portable edition", "new_off", "ours", "portable", "tps", True, 2.0, ">= 2.0"),
    ("1p", "1 new keys, sync_commit=off: portable edition / bare SQL", "new_off", "portable", "bare", "tps", True, None, ""),
    # callgrind (bench/lib/callgrind.sh): server-side counts per operation, no noise
    ("1g", "1 new keys, callgrind: instructions per key, ours / bare SQL", "cg:instr", "new_ours", "new_bare", "instr",
     False, None, ""),
    ("1h", "1 new keys, callgrind: instructions per key, ours / simple peer", "cg:instr", "new_ours", "new_simple",
     "instr", False, None, ""),
    ("1i", "1 new keys, callgrind: executor starts per key, ours / bare SQL", "cg:executor_starts", "new_ours",
     "new_bare", "count", False, None, ""),
    ("1j", "1 new keys, callgrind: SPI statements per key (ours)", "cg:spi_statements", "new_ours", None, "count",
     False, None, ""),
    ("1k", "1 once() of a new message id, callgrind: instructions, ours / bare INSERT ... ON CONFLICT DO NOTHING",
     "cg:instr", "once_ours", "once_bare", "instr", False, None, ""),
    ("1d", "1 new keys, sync_commit=on: ours / bare SQL", "new_on", "ours", "bare", "tps", True, None, ""),
    ("1e", "1 new keys, sync_commit=on: ours / simple peer", "new_on", "ours", "simple", "tps", True, None, ""),
    ("1f", "1 new keys, sync_commit=on: ours / portable edition", "new_on", "ours", "portable", "tps", True, None, ""),
    ("1q", "1 new keys, sync_commit=on: portable edition / bare SQL", "new_on", "portable", "bare", "tps", True, None, ""),
    ("2a", "2 replay: ours claim / PK SELECT", "replay", "ours", "pk", "tps", True, 1.0, ">= 1.0"),
    ("2s", "2 replay: ours as SELECT claim(...) (no FROM) / PK SELECT", "replay", "scalar", "pk", "tps", True, None, ""),
    ("2k", "2 replay: the C++ client's statement (9 columns, FROM, 6 parameters) / PK SELECT", "replay", "client", "pk",
     "tps", True, None, ""),
    ("2e", "2 replay, callgrind: executor starts per replay, ours / PK SELECT", "cg:executor_starts", "replay_ours",
     "replay_pk", "count", False, None, ""),
    ("2f", "2 replay, callgrind: SPI statements per replay (ours)", "cg:spi_statements", "replay_ours", None, "count",
     False, None, ""),
    ("2g", "2 replay, callgrind: instructions per replay, ours / PK SELECT", "cg:instr", "replay_ours", "replay_pk",
     "instr", False, None, ""),
    # callgrind over the wire (bench/lib/callgrind_wire.sh): a pgbench -M prepared backend's instructions per txn
    ("2h", "2 replay over the wire, callgrind: instructions per txn, ours claim / PK SELECT", "cgw:instr", "replay_ours",
     "replay_pk", "instr", False, 1.0, "<= 1.0"),
    ("2i", "2 replay over the wire, callgrind: scalar form SELECT claim(...) / PK SELECT", "cgw:instr", "replay_scalar",
     "replay_pk", "instr", False, None, ""),
    ("2j", "2 replay over the wire, callgrind: the C++ client's statement / PK SELECT", "cgw:instr", "replay_client",
     "replay_pk", "instr", False, None, ""),
    ("2b", "2 replay: ours / simple peer", "replay", "ours", "simple", "tps", True, None, ""),
    ("2c", "2 replay: ours / portable edition", "replay", "ours", "portable", "tps", True, None, ""),
    ("2p", "2 replay: portable edition claim / PK SELECT", "replay", "portable", "pk", "tps", True, None, ""),
    ("3d", "3 business txn: ours / simple peer", "biz", "ours", "simple", "tps", True, 1.0, ">= 1.0"),
    ("3a", "3 business txn: ours / no key calls", "biz", "ours", "plain", "tps", True, None, ""),
    ("3b", "3 business txn: simple peer / no key calls", "biz", "simple", "plain", "tps", True, None, ""),
    ("3c", "3 business txn: portable edition / no key calls", "biz", "portable", "plain", "tps", True, None, ""),
    ("4a", "4 contention, 64 hot keys: ours / simple peer", "hot", "ours", "simple", "tps", True, None, ""),
    ("4b", "4 contention, 64 hot keys: ours / portable edition", "hot", "ours", "portable", "tps", True, None, ""),
    ("5a", "5 background sweeper (defaults) rows/s / keys claimed/s during the sweep", "sweep", "sweeper", "claimed",
     "rows/s", True, 10.0, ">= 10 (keeps up)"),
    ("5e", "5 background sweeper (defaults) rows/s / new keys/s made flat out in 1", "sweep", "sweeper", "make", "rows/s",
     True, None, ""),
    ("5b", "5 sweep() by hand in 10k batches / one bare DELETE", "sweep", "hand", "bare", "rows/s", True, None, ""),
    ("5c", "5 claim p99 while sweeping / without", "sweeplat", "p99_sweep", "p99_base", "us", False, 1.5, "<= 1.5"),
    ("5d", "5 claim p50 while sweeping / without", "sweeplat", "p50_sweep", "p50_base", "us", False, None, ""),
    ("6a", "6 steady TTL load: heap+index size, end / one third in", "steady", "size_end", "size_third", "bytes", False, 1.1, "~1.0 (flat)"),
    ("7a", "7 C++ client claim (replay) / raw libpq, time per call", "cxx", "client_claim", "raw_claim", "ns", False, None, ""),
    ("7b", "7 C++ client finish (repeat) / raw libpq, time per call", "cxx", "client_finish", "raw_finish", "ns", False, None, ""),
    ("7c", "7 C++ client claim / raw libpq, client CPU per call", "cxx", "client_claim_cpu", "raw_claim_cpu", "ns", False, None, ""),
    ("7d", "7 C++ client finish / raw libpq, client CPU per call", "cxx", "client_finish_cpu", "raw_finish_cpu", "ns", False, None, ""),
]


def fmt(v, unit):
    if v is None:
        return "-"
    if unit == "bytes":
        return f"{v / 1048576:.1f} MB"
    if v >= 100000:
        return f"{v / 1000:.0f}k"
    if v >= 100:
        return f"{v:.0f}"
    return f"{v:.2f}"


def load_runs(outdir):
    runs = {}
    with open(os.path.join(outdir, "runs.tsv")) as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) < 4 or p[3] in ("", "NA"):
                continue
            runs.setdefault((p[0], p[1]), {})[p[2]] = float(p[3])
    return runs


def summarize(runs):
    """Per row of PAIRS: (pid, label, ttext, cells) where cells is the table row
    (ours, baseline, ratio, CPU, target, verdict), plus the ratio summary
    (median, min, max, n) or None, and the verdict."""
    out = []
    for pid, label, group, ours, base, unit, higher, target, ttext in PAIRS:
        o = runs.get((group, ours), {})
        b = runs.get((group, base), {}) if base else {}
        if not o:
            out.append((pid, label, ttext, ("not measured", "-", "-", "-"), None, "n/a"))
            continue
        om = statistics.median(o.values())
        if base is None:
            vals = list(o.values())
            verdict = "-" if target is None else ("met" if (om >= target) == higher else "missed")
            out.append((pid, label, ttext, (fmt(om, unit) + f" {unit}", "-",
                        f"{fmt(min(vals), unit)}-{fmt(max(vals), unit)} (n={len(vals)})", "-"),
                        (om, min(vals), max(vals), len(vals), unit), verdict))
            continue
        if not b:
            out.append((pid, label, ttext, (fmt(om, unit), "not measured", "-", "-"), None, "n/a"))
            continue
        bm = statistics.median(b.values())
        rounds = sorted(set(o) & set(b))
        ratios = [o[r] / b[r] for r in rounds if b[r]]
        if not ratios:
            continue
        r_med = statistics.median(ratios)
        if target is None:
            verdict = "-"
        else:
            verdict = "met" if ((r_med >= target) if higher else (r_med <= target)) else "missed"
        cpu = "-"
        co, cb = runs.get(("cpu:" + group, ours), {}), runs.get(("cpu:" + group, base), {})
        crounds = sorted(set(co) & set(cb))
        if unit == "tps" and crounds:
            cr = [cb[r] / co[r] for r in crounds if co[r]]
            cpu = (f"{statistics.median(cr):.2f} ({min(cr):.2f}-{max(cr):.2f}; "
                   f"{statistics.median(co.values()):.0f}/{statistics.median(cb.values()):.0f} us)")
        out.append((pid, label, ttext, (f"{fmt(om, unit)} {unit}", f"{fmt(bm, unit)} {unit}",
                    f"{r_med:.2f} ({min(ratios):.2f}-{max(ratios):.2f}, n={len(ratios)})", cpu),
                    (r_med, min(ratios), max(ratios), len(ratios), None), verdict))
    return out


def table(outdir):
    runs = load_runs(outdir)
    rows, dat = [], []
    units = {p[0]: (p[2], p[5], p[7]) for p in PAIRS}
    for pid, label, ttext, cells, summary, verdict in summarize(runs):
        rows.append((label,) + cells + (ttext, verdict))
        group, unit, target = units[pid]
        if summary and summary[4] is None and (unit in ("tps",) or group in ("sweeplat", "cxx", "sweep")):
            dat.append((pid, summary[0], summary[1], summary[2], target if target is not None else -1))
    head = ("workload", "ours", "baseline", "ratio median (min-max)",
            "CPU ratio base/ours (min-max; ours/base us per txn)", "target", "verdict")
    print_table(head, rows)
    with open(os.path.join(outdir, "table.md"), "w") as f:
        f.write(markdown(head, rows))
    with open(os.path.join(outdir, "ratios.dat"), "w") as f:
        for i, (pid, med, lo, hi, tgt) in enumerate(dat):
            f.write(f"{i} {pid} {med:.4f} {lo:.4f} {hi:.4f} {tgt}\n")
    plot(outdir, bool(dat))


def print_table(head, rows):
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    lines = [" | ".join(str(c).ljust(w) for c, w in zip(head, widths)),
             "-+-".join("-" * w for w in widths)]
    for r in rows:
        lines.append(" | ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    print("\n".join(lines))


def markdown(head, rows):
    return ("| " + " | ".join(head) + " |\n|" + "---|" * len(head) + "\n" +
            "".join("| " + " | ".join(str(c) for c in r) + " |\n" for r in rows))


def majors(outdir, names):
    """One row per PAIRS row, one column per major (OUTDIR/pgN/runs.tsv):
    the ratio median (min-max) and, where the row has a target, its verdict."""
    per = {m: {s[0]: s for s in summarize(load_runs(os.path.join(outdir, f"pg{m}")))} for m in names}
    head = ("workload", "target") + tuple(f"PostgreSQL {m}" for m in names)
    rows = []
    for pid, label, *_rest in PAIRS:
        ttext = _rest[-1]
        cells = []
        for m in names:
            s = per[m].get(pid)
            if s is None or s[4] is None:
                cells.append("-")
                continue
            med, lo, hi, n, unit = s[4]
            if unit is None:
                text = f"{med:.2f}" if n == 1 else f"{med:.2f} ({lo:.2f}-{hi:.2f})"
            else:  # an absolute figure (no baseline)
                text = f"{fmt(med, unit)} {unit}"
            if s[5] in ("met", "missed"):
                text += f" {s[5]}"
            cells.append(text)
        if all(c == "-" for c in cells):
            continue
        rows.append((label, ttext or "-") + tuple(cells))
    print_table(head, rows)
    with open(os.path.join(outdir, "table.md"), "w") as f:
        f.write(markdown(head, rows))


def plot(outdir, have_ratios):
    steady = os.path.join(outdir, "steady.tsv")
    have_steady = os.path.exists(steady) and os.path.getsize(steady) > 0
    script = [
        "set terminal pngcairo size 1400,600 font ',10'" if pngcairo() else "set terminal png size 1400,600",
        f"set output '{os.path.join(outdir, 'bench.png')}'",
        "set termoption noenhanced",
        "set multiplot layout 1,2",
    ]
    if have_ratios:
        script += [
            "set title 'pg_idempotency / baseline (median, min-max; tps: higher is better, latency/size/ns: lower is better)'",
            "set style fill solid 0.5", "set boxwidth 0.6", "set yrange [0:*]", "set grid ytics",
            "set xtics rotate by -45", "unset key",
            f"plot '{os.path.join(outdir, 'ratios.dat')}' using 1:3:xtic(2) with boxes lc rgb '#4477aa', "
            f"'' using 1:3:4:5 with yerrorbars lc rgb 'black' pt 0, 1 with lines lc rgb 'red' dt 2",
        ]
    else:
        script += ["set title 'no ratios measured'", "plot 0 notitle"]
    if have_steady:
        script += [
            "set title 'workload 6: steady TTL load, idempotency.keys size'", "set xtics norotate",
            "set xlabel 'seconds'", "set ylabel 'MB'", "set key top left", "set yrange [0:*]",
            f"plot '{steady}' using 1:($2/1048576) with linespoints title 'heap', "
            f"'' using 1:($3/1048576) with linespoints title 'indexes', "
            f"'' using 1:($4/1000) with lines axes x1y1 title 'live rows (thousands)'",
        ]
    else:
        script += ["set title 'workload 6 not measured'", "plot 0 notitle"]
    script.append("unset multiplot")
    try:
        subprocess.run(["gnuplot"], input="\n".join(script), text=True, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except Exception as e:  # the table matters more than the picture
        print(f"(plot failed: {e})", file=sys.stderr)


def pngcairo():
    try:
        out = subprocess.run(["gnuplot", "-e", "set terminal"], capture_output=True, text=True).stderr
        return "pngcairo" in out
    except Exception:
        return False


if __name__ == "__main__":
    {"lat": lat, "table": lambda a: table(a[0]), "majors": lambda a: majors(a[0], a[1:])}[sys.argv[1]](sys.argv[2:])
