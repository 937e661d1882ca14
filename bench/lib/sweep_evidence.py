#!/usr/bin/env python3
"""Evidence for one latency window of workload 5 (bench/run, bench/sweep_p99).

  sweep_evidence.py OUT.json STOPFILE

Runs from its start until STOPFILE exists. Every 10 ms it samples the wait
events of the claim backends (application_name pgbench) from
pg_stat_activity, and every 100 ms whether a vacuum of idempotency.keys is in
progress (pg_stat_progress_vacuum). At the start and the end it reads:
pg_stat_wal (records, full-page images, bytes, writes, syncs),
pg_stat_bgwriter (checkpoints, buffers written by whom), the table's counters
(pg_stat_user_tables), idempotency.stats.swept, the run-queue delay and CPU
time of every claim backend (/proc/<pid>/schedstat), the CPU time of every
server process by backend type, of pgbench and of the kernel's threads, the
machine's CPU split (/proc/stat) and the sectors written to disk. OUT.json
holds the differences; bench/lib/sweep_evidence_table.py turns several into a
table.
"""
import json
import os
import sys
import time

import psycopg2

TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_us(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    fields = s[s.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) * 1e6 / TICK, int(fields[1])  # utime+stime, ppid


def proc_comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def schedstat(pid):
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            run_ns, wait_ns, slices = f.read().split()
        return int(run_ns), int(wait_ns), int(slices)
    except OSError:
        return None


def machine_cpu():
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    names = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]
    return {n: int(v) * 1e6 / TICK for n, v in zip(names, parts)}


def sectors_written():
    total = 0
    with open("/proc/diskstats") as f:
        for line in f:
            p = line.split()
            name = p[2]
            # whole disks only (no partitions, no loop/ram devices)
            if name.startswith(("loop", "ram", "dm-")) or os.path.exists(f"/sys/block/{name}") is False:
                continue
            total += int(p[9])
    return total


def server_pids(cur):
    cur.execute("SELECT pid, backend_type, coalesce(application_name, '') FROM pg_catalog.pg_stat_activity")
    return {pid: (bt, app) for pid, bt, app in cur.fetchall()}


def category(bt, app):
    if app == "pgbench":
        return "claim backends"
    if "idempotency" in app or "idempotency" in bt:
        return "sweeper" if "sweeper" in (app + bt) else "launcher"
    return bt


def snapshot(cur, postmaster):
    s = {"t": time.time()}
    cur.execute("SELECT wal_records, wal_fpi, wal_bytes::bigint, wal_buffers_full, wal_write, wal_sync FROM pg_catalog.pg_stat_wal")
    s["wal"] = dict(zip(["records", "fpi", "bytes", "buffers_full", "writes", "syncs"], cur.fetchone()))
    cur.execute("SELECT checkpoints_timed + checkpoints_req, buffers_checkpoint, buffers_clean, buffers_backend, "
                "buffers_backend_fsync FROM pg_catalog.pg_stat_bgwriter")
    s["bgwriter"] = dict(zip(["checkpoints", "buffers_checkpoint", "buffers_clean", "buffers_backend",
                              "backend_fsync"], cur.fetchone()))
    cur.execute("SELECT n_tup_del, n_dead_tup, autovacuum_count, vacuum_count FROM pg_catalog.pg_stat_user_tables "
                "WHERE relid = 'idempotency.keys'::regclass")
    s["table"] = dict(zip(["deleted", "dead", "autovacuums", "vacuums"], cur.fetchone()))
    cur.execute("SELECT coalesce(swept, 0) FROM idempotency.stats")
    s["swept"] = cur.fetchone()[0]
    s["pids"] = server_pids(cur)
    s["sched"] = {pid: schedstat(pid) for pid, (bt, app) in s["pids"].items() if app == "pgbench"}
    # CPU by process: the server's (children of the postmaster), pgbench, kernel threads
    cpu = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        pid = int(d)
        r = proc_cpu_us(pid)
        if r is None:
            continue
        us, ppid = r
        if ppid == postmaster:
            bt, app = s["pids"].get(pid, ("server process (other)", ""))
            cpu[pid] = (category(bt, app), us)
        elif ppid == 2 or pid == 2:
            cpu[pid] = ("kernel threads", us)
        elif proc_comm(pid) == "pgbench":
            cpu[pid] = ("pgbench (client)", us)
    s["cpu"] = cpu
    s["machine"] = machine_cpu()
    s["sectors"] = sectors_written()
    return s


def main():
    out, stopfile = sys.argv[1], sys.argv[2]
    conn = psycopg2.connect("")
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SET application_name = 'sweep_evidence'")
    with open(os.path.join(os.environ["PGDATA_DIR"], "postmaster.pid")) as f:
        postmaster = int(f.readline())
    a = snapshot(cur, postmaster)
    waits, samples, vac_samples, vac_on, n = {}, 0, 0, 0, 0
    last_sched, last_cpu = {}, {}
    while not os.path.exists(stopfile):
        cur.execute("SELECT coalesce(wait_event_type || ':' || wait_event, 'on CPU (no wait event)') "
                    "FROM pg_catalog.pg_stat_activity WHERE application_name = 'pgbench' AND state = 'active'")
        for (w,) in cur.fetchall():
            waits[w] = waits.get(w, 0) + 1
            samples += 1
        if n % 10 == 0:
            # Claim backends that connected after the start count from when
            # first seen; the last reading of each stands for the end if it
            # has gone by then (pgbench disconnects when its run ends).
            for pid, (bt, app) in server_pids(cur).items():
                if app != "pgbench":
                    continue
                st, r = schedstat(pid), proc_cpu_us(pid)
                if pid not in a["sched"]:
                    a["sched"][pid] = st
                    if r is not None:
                        a["cpu"][pid] = (category(bt, app), r[0])
                if st is not None:
                    last_sched[pid] = st
                if r is not None:
                    last_cpu[pid] = (category(bt, app), r[0])
            cur.execute("SELECT count(*) FROM pg_catalog.pg_stat_progress_vacuum "
                        "WHERE relid = 'idempotency.keys'::regclass")
            vac_samples += 1
            vac_on += 1 if cur.fetchone()[0] > 0 else 0
        n += 1
        time.sleep(0.01)
    b = snapshot(cur, postmaster)
    for pid, st in last_sched.items():
        b["sched"].setdefault(pid, st)
    for pid, c in last_cpu.items():
        b["cpu"].setdefault(pid, c)
    dt = b["t"] - a["t"]
    res = {"seconds": dt, "swept": b["swept"] - a["swept"]}
    res["wal"] = {k: b["wal"][k] - a["wal"][k] for k in a["wal"]}
    res["bgwriter"] = {k: b["bgwriter"][k] - a["bgwriter"][k] for k in a["bgwriter"]}
    res["table"] = {k: b["table"][k] - a["table"][k] for k in a["table"]}
    res["table"]["dead_at_end"] = b["table"]["dead"]
    res["vacuum_running_share"] = vac_on / vac_samples if vac_samples else 0
    res["wait_samples"] = samples
    res["waits"] = {k: v / samples for k, v in sorted(waits.items(), key=lambda kv: -kv[1])} if samples else {}
    run = wait = slices = 0
    for pid, s0 in a["sched"].items():
        s1 = b["sched"].get(pid)
        if s0 and s1:
            run += s1[0] - s0[0]
            wait += s1[1] - s0[1]
            slices += s1[2] - s0[2]
    res["claim_sched"] = {"run_us": run / 1e3, "runqueue_wait_us": wait / 1e3, "slices": slices}
    cats = {}
    for pid, (cat, us) in b["cpu"].items():
        before = a["cpu"].get(pid)
        if before is None and cat == "claim backends":
            continue  # not seen during the window
        cats[cat] = cats.get(cat, 0) + us - (before[1] if before else 0)
    res["cpu_cores"] = {k: v / 1e6 / dt for k, v in sorted(cats.items(), key=lambda kv: -kv[1])}
    res["machine_cores"] = {k: (b["machine"][k] - a["machine"][k]) / 1e6 / dt for k in a["machine"]}
    res["disk_mb_written"] = (b["sectors"] - a["sectors"]) * 512 / 1e6
    with open(out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
