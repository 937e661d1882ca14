#!/usr/bin/env python3
"""The table of bench/sweep_p99: per variant, medians (min-max) over rounds of
the claim p99 ratio, the sweep rate and the evidence of sweep_evidence.py for
the baseline and the sweep window; then, over every round of every variant,
the rank correlation of each evidence figure (sweep window minus baseline)
with the p99 ratio.

  sweep_evidence_table.py OUTDIR
"""
import csv
import json
import os
import statistics
import sys


def med(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    m = statistics.median(xs)
    return f"{fmt(m)} ({fmt(min(xs))}-{fmt(max(xs))})"


def fmt(x):
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def figures(ev, rate_per_s=float(os.environ.get("SWEEP_LAT_RATE", 2000))):
    """Evidence figures of one window, per claim or per swept row."""
    s = ev["seconds"]
    claims = rate_per_s * s
    f = {}
    f["claim run-queue wait, us per claim"] = ev["claim_sched"]["runqueue_wait_us"] / claims
    f["claim backend CPU, us per claim"] = ev["claim_sched"]["run_us"] / claims
    for w in ("on CPU (no wait event)", "Client:ClientRead"):
        f[f"claim samples: {w}"] = ev["waits"].get(w, 0)
    f["claim samples: Lock/LWLock/IO waits"] = sum(v for k, v in ev["waits"].items()
                                                   if k.split(":")[0] in ("Lock", "LWLock", "IO", "BufferPin"))
    f["WAL MB/s"] = ev["wal"]["bytes"] / 1e6 / s
    f["full-page images/s"] = ev["wal"]["fpi"] / s
    if ev["swept"] > 0:
        f["WAL bytes per swept row"] = ev["wal"]["bytes"] / ev["swept"]
        f["full-page images per 1000 swept rows"] = ev["wal"]["fpi"] * 1000 / ev["swept"]
    f["WAL syncs/s"] = ev["wal"]["syncs"] / s
    f["disk MB/s written"] = ev["disk_mb_written"] / s
    f["checkpoints in window"] = ev["bgwriter"]["checkpoints"]
    f["vacuum of keys running, share of window"] = ev["vacuum_running_share"]
    f["autovacuums finished in window"] = ev["table"]["autovacuums"]
    for k in ("sweeper", "walwriter", "autovacuum worker", "checkpointer", "background writer", "kernel threads",
              "claim backends", "pgbench (client)"):
        f[f"CPU cores: {k}"] = ev["cpu_cores"].get(k, 0)
    m = ev["machine_cores"]
    f["machine: busy cores"] = sum(v for k, v in m.items() if k not in ("idle", "iowait"))
    f["machine: iowait cores"] = m.get("iowait", 0)
    f["machine: system+softirq cores"] = m.get("system", 0) + m.get("softirq", 0) + m.get("irq", 0)
    return f


def rank(xs):
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0.0] * len(xs)
    for pos, i in enumerate(order):
        r[i] = pos
    return r


def spearman(a, b):
    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    ra, rb = rank(a), rank(b)
    ma, mb = statistics.mean(ra), statistics.mean(rb)
    num = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    den = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return num / den


def main():
    out = sys.argv[1]
    rows = list(csv.DictReader(open(os.path.join(out, "rounds.tsv")), delimiter="\t"))
    variants = []
    for r in rows:
        if r["variant"] not in variants:
            variants.append(r["variant"])
    ev = {}
    for r in rows:
        tag = f'{r["variant"]}-{r["round"]}'
        try:
            b = figures(json.load(open(os.path.join(out, "evidence", f"base-{tag}.json"))))
            s = figures(json.load(open(os.path.join(out, "evidence", f"sweep-{tag}.json"))))
        except (OSError, ValueError, KeyError):
            continue
        ev[tag] = (b, s)

    num = lambda r, k: float(r[k]) if r[k] not in ("", "NA") else None
    print("| variant | rounds | claim p99 while sweeping / without | per round | p99 without / while (us) | p50 ratio "
          "| swept rows/s | swept rows/s / keys claimed/s during the sweep | swept rows/s / new keys/s flat out |")
    print("|---|---|---|---|---|---|---|---|---|")
    for v in variants:
        rs = [r for r in rows if r["variant"] == v]
        p50 = [num(r, "p50_sweep") / max(1, num(r, "p50_base")) for r in rs]
        print(f"| {v} | {len(rs)} | {med([num(r, 'p99_ratio') for r in rs])} | "
              f"{', '.join(r['p99_ratio'] for r in rs)} | "
              f"{fmt(statistics.median([num(r, 'p99_base') for r in rs]))} / "
              f"{fmt(statistics.median([num(r, 'p99_sweep') for r in rs]))} | {med(p50)} | "
              f"{med([num(r, 'swept_per_s') for r in rs])} | {med([num(r, 'swept_per_claim') for r in rs])} | "
              f"{med([num(r, 'keeps_up') for r in rs])} |")
    print()
    keys = []
    for b, s in ev.values():
        for k in list(b) + list(s):
            if k not in keys:
                keys.append(k)
    print("Evidence, median (min-max) over rounds, baseline window → sweep window:")
    print()
    print("| figure | " + " | ".join(f"{v}: without | {v}: sweeping" for v in variants) + " | rank correlation with p99 ratio (all rounds) |")
    print("|---|" + "---|---|" * len(variants) + "---|")
    for k in keys:
        cells = []
        for v in variants:
            tags = [t for t in ev if t.rsplit("-", 1)[0] == v]
            cells.append(med([ev[t][0].get(k) for t in tags]))
            cells.append(med([ev[t][1].get(k) for t in tags]))
        xs, ys = [], []
        for r in rows:
            tag = f'{r["variant"]}-{r["round"]}'
            if tag in ev and k in ev[tag][1]:
                xs.append(ev[tag][1][k] - ev[tag][0].get(k, 0))
                ys.append(num(r, "p99_ratio"))
        c = spearman(xs, ys)
        print(f"| {k} | " + " | ".join(cells) + f" | {'-' if c is None else f'{c:+.2f}'} |")


if __name__ == "__main__":
    main()
