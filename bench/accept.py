#!/usr/bin/env python3
"""Sluice acceptance benchmark: SMTP ingress throughput, CPU per message, enqueue latency,
and the memory cost of idle connections, against the goals of the performance issue.

    python3 bench/accept.py            # build, measure, print the summary table

What it does (see bench/README.md for the why and how to read the figures):

1. `cargo build --release --bin sluice --example idle_connections`.
2. Reference: Postfix's smtp-source straight into smtp-sink, the machine's ceiling for
   this load generator.
3. Throughput: `sluice standalone` on a fresh spool in a temporary directory, loaded with
   `smtp-source -s 20 -m 20000 -l 4096`; wall clock, the relay's CPU time from
   /proc/PID/stat, and the relay's own /metrics (accepted count, enqueue histogram).
4. Idle connections: a second fresh relay, VmRSS before and after the
   `idle_connections` example holds 10,000 connections, and one new EHLO session while
   they are held.

Loopback only; every wait is bounded; every child process is stopped on exit. Python
3.11 standard library only. This is a benchmark for people, never a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from common import (
    run_main,
    CLK_TCK, REPO, START_TIMEOUT, BenchError, Relay, _on_signal, build, cargo_target_dir,
    cpu_seconds, ehlo_check, free_port, histogram, histogram_delta, labeled, launch_relay, log,
    log_problems, quantile, raise_fd_limit, read_line, run_source, spawn, stop, stop_all,
    verdict, vmrss_kib, wait_for_port,
)

# Reference figures for this kind of 2-core machine (from the issue).
POSTFIX_MSGS_PER_S = 500.0
POSTFIX_CPU_MS_PER_MSG = 3.8
# Goals (from the issue).
GOAL_MSGS_PER_S = 3 * POSTFIX_MSGS_PER_S
GOAL_CPU_MS_PER_MSG = 1.0
GOAL_IDLE_KIB_PER_CONN = 64.0


POLICY = """\
apiVersion: sluice.dev/v1alpha1
kind: RelayPolicy
metadata:
  name: bench
  namespace: mail
spec:
  trustedNetworks: ["127.0.0.1/32"]
  localDomains:
    - domain: local.test
      delivery:
        maildir: {{ path: {maildir} }}
"""

CONFIG = """\
hostname: relay.bench.test
listeners:
  - {{ name: smtp, address: "127.0.0.1:{smtp}", kind: relay }}
spool: spool
admin: "127.0.0.1:{admin}"
policies: [policy.yaml]
limits:
  maxConnections: {max_conn}
  maxConnectionsPerIp: {max_conn}
  shutdownGrace: 5s
# This benchmark measures acceptance only: queue, do not deliver (and look nothing up).
delivery:
  enabled: false
log: text
"""


def start_relay(binary: Path, workdir: Path, name: str, max_conn: int) -> Relay:
    d = workdir / name
    d.mkdir()
    (d / "maildir").mkdir()
    (d / "policy.yaml").write_text(POLICY.format(maildir=d / "maildir"))
    smtp, admin = free_port(), free_port()
    while admin == smtp:
        admin = free_port()
    (d / "sluice.yaml").write_text(CONFIG.format(smtp=smtp, admin=admin, max_conn=max_conn))
    return launch_relay(binary, d, name, smtp, admin)


def sink_reference(args, workdir: Path) -> dict:
    port = free_port()
    cmd = [args.smtp_sink]
    if os.geteuid() == 0:
        cmd += ["-u", "nobody"]  # smtp-sink refuses to run as root without it
    cmd += ["-m", "1000", f"127.0.0.1:{port}", "1000"]
    log("reference: " + " ".join(cmd))
    sink_log = open(workdir / "smtp-sink.log", "wb")
    sink = spawn(cmd, stdin=subprocess.DEVNULL, stdout=sink_log, stderr=sink_log)
    try:
        wait_for_port(port, sink, START_TIMEOUT)
        run = run_source(port, args)
    finally:
        stop(sink, signal.SIGTERM, timeout=5)
        sink_log.close()
    rate = args.messages / run.wall
    log(f"reference: {rate:.0f} msg/s ({run.wall:.2f}s)")
    return {"msgs_per_s": rate, "wall_s": run.wall, "source_stderr": run.stderr}


def throughput(args, binary: Path, workdir: Path) -> dict:
    relay = start_relay(binary, workdir, "throughput", max_conn=20000)
    try:
        m0 = relay.metrics()
        cpu0 = cpu_seconds(relay.pid)
        run = run_source(relay.smtp, args)
        cpu1 = cpu_seconds(relay.pid)
        m1 = relay.metrics()
        rss_after_load = vmrss_kib(relay.pid)
    finally:
        relay.shutdown()
    accepted = m1.get("sluice_messages_accepted_total", 0) - m0.get("sluice_messages_accepted_total", 0)
    buckets, count, total = histogram_delta(
        histogram(m1, "sluice_enqueue_seconds"), histogram(m0, "sluice_enqueue_seconds")
    )
    p50 = quantile(buckets, count, 0.50)
    p99 = quantile(buckets, count, 0.99)
    rejected = labeled(m1, "sluice_messages_rejected_total")
    refused = labeled(m1, "sluice_connections_refused_total")
    problems = log_problems(relay.log_path)
    result = {
        "messages": args.messages,
        "accepted": accepted,
        "wall_s": run.wall,
        "msgs_per_s": args.messages / run.wall,
        "relay_cpu_s": cpu1 - cpu0,
        "cpu_ms_per_msg": (cpu1 - cpu0) * 1000 / args.messages,
        "cpu_cores_busy": (cpu1 - cpu0) / run.wall,
        "client_cpu_s": run.client_cpu,
        "enqueue_count": count,
        "enqueue_mean_ms": total / count * 1000 if count else float("nan"),
        "enqueue_p50_bucket_ms": p50[0] * 1000,
        "enqueue_p99_bucket_ms": p99[0] * 1000,
        "enqueue_p99_interpolated_ms": p99[1] * 1000,
        "enqueue_buckets": [[le, c] for le, c in buckets],
        "rejected": rejected,
        "connections_refused": refused,
        "rss_after_load_kib": rss_after_load,
        "relay_exit_code": relay.exit_code,
        "relay_log_problems": problems,
        "relay_log": str(relay.log_path),
        "source_stderr": run.stderr,
    }
    errors = []
    if accepted != args.messages:
        errors.append(f"the relay accepted {accepted:.0f} messages, not {args.messages}")
    if count != args.messages:
        errors.append(f"the enqueue histogram counted {count:.0f} messages, not {args.messages}")
    if rejected:
        errors.append(f"rejections: {rejected}")
    if refused:
        errors.append(f"refused connections: {refused}")
    result["errors"] = errors
    return result


def idle(args, binary: Path, example: Path, workdir: Path) -> dict:
    n = args.idle
    relay = start_relay(binary, workdir, "idle", max_conn=max(20000, n + 100))
    holder = None
    try:
        time.sleep(1)
        rss_before = vmrss_kib(relay.pid)
        cmd = [
            str(example), "--addr", f"127.0.0.1:{relay.smtp}", "--count", str(n),
            "--sources", str(args.idle_sources), "--hold", str(args.hold),
        ]
        log(" ".join(cmd))
        holder = spawn(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = read_line(holder.stdout, timeout=args.connect_timeout)
        log(f"idle_connections: {line}")
        fields = dict(kv.split("=", 1) for kv in line.split())
        held = int(fields["held"])
        time.sleep(2)  # let every session reach its read of the first command
        rss_held = vmrss_kib(relay.pid)
        active = relay.metrics().get("sluice_connections_active", float("nan"))
        try:
            ehlo_s = ehlo_check(relay.smtp)
            ehlo_ok = True
        except BenchError as e:
            log(f"EHLO while {held} are held: {e}")
            ehlo_s, ehlo_ok = float("nan"), False
        holder.stdin.write(b"release\n")
        holder.stdin.close()
        still = read_line(holder.stdout, timeout=30)
        log(f"idle_connections: {still}")
        still_open = int(still.split("=", 1)[1])
        stop(holder, signal.SIGTERM, timeout=30)
        # Sessions close as the relay sees the FINs; give it a moment to drop them.
        deadline = time.monotonic() + 15
        active_after = relay.metrics().get("sluice_connections_active", float("nan"))
        while time.monotonic() < deadline and active_after > 0:
            time.sleep(0.2)
            active_after = relay.metrics().get("sluice_connections_active", float("nan"))
        rss_released = vmrss_kib(relay.pid)
    finally:
        if holder is not None:
            stop(holder, signal.SIGTERM, timeout=10)
        relay.shutdown()
    per_conn_kib = (rss_held - rss_before) / held if held else float("nan")
    result = {
        "requested": n,
        "held": held,
        "failed": int(fields.get("failed", -1)),
        "refused": int(fields.get("refused", -1)),
        "connect_ms": int(fields.get("elapsed_ms", -1)),
        "still_open_at_release": still_open,
        "connections_active_metric": active,
        "connections_active_after_release": active_after,
        "rss_before_kib": rss_before,
        "rss_held_kib": rss_held,
        "rss_after_release_kib": rss_released,
        "kib_per_idle_connection": per_conn_kib,
        "ehlo_while_held_ok": ehlo_ok,
        "ehlo_while_held_ms": ehlo_s * 1000,
        "relay_exit_code": relay.exit_code,
        "relay_log_problems": log_problems(relay.log_path),
        "relay_log": str(relay.log_path),
    }
    errors = []
    if held != n:
        errors.append(f"held {held} of {n} connections")
    if still_open != held:
        errors.append(f"the relay closed {held - still_open} held connections")
    if active != held:
        errors.append(f"sluice_connections_active was {active:.0f} with {held} held")
    if not ehlo_ok:
        errors.append("no new session while the connections were held")
    if active_after != 0:
        errors.append(f"{active_after:.0f} sessions still open 15 s after the client closed them")
    result["errors"] = errors
    return result


# ---------------------------------------------------------------------------------------
# Summary.

def summary(args, res: dict) -> tuple[str, bool]:
    rows = []
    goals_ok = True

    def row(what, value, goal="", ok=None):
        nonlocal goals_ok
        if ok is False:
            goals_ok = False
        rows.append((what, value, goal, verdict(ok) if goal else ""))

    t, s, i = res.get("throughput"), res.get("sink"), res.get("idle")
    load = f"{args.messages} msgs x {args.size} B, {args.sessions} sessions" + (", -d" if args.reuse else "")
    if t:
        row("load (smtp-source)", load)
        row("accepted by relay", f"{t['accepted']:.0f} / {t['messages']}")
        row("throughput", f"{t['msgs_per_s']:.0f} msg/s ({t['wall_s']:.2f} s)",
            f">= {GOAL_MSGS_PER_S:.0f}", t["msgs_per_s"] >= GOAL_MSGS_PER_S)
        row("ratio vs Postfix 3.7 (500 msg/s)", f"{t['msgs_per_s'] / POSTFIX_MSGS_PER_S:.2f}x", ">= 3x",
            t["msgs_per_s"] / POSTFIX_MSGS_PER_S >= 3)
        row("relay CPU per message", f"{t['cpu_ms_per_msg']:.3f} ms ({t['cpu_cores_busy']:.2f} cores busy)",
            f"< {GOAL_CPU_MS_PER_MSG:.0f} ms", t["cpu_ms_per_msg"] < GOAL_CPU_MS_PER_MSG)
        row("CPU vs Postfix 3.7 (3.8 ms/msg)", f"{POSTFIX_CPU_MS_PER_MSG / t['cpu_ms_per_msg']:.1f}x less"
            if t["cpu_ms_per_msg"] > 0 else "n/a")
        p99 = t["enqueue_p99_bucket_ms"]
        p99_text = f"<= {p99:g} ms (bucket), ~{t['enqueue_p99_interpolated_ms']:.2f} ms interpolated"
        if p99 == float("inf"):
            p99_text = f"> {t['enqueue_p99_interpolated_ms']:g} ms (beyond the last bucket)"
        row("p99 end-of-data -> 250 (enqueue)", p99_text, "reported")
        row("p50 / mean enqueue", f"<= {t['enqueue_p50_bucket_ms']:g} ms (bucket) / {t['enqueue_mean_ms']:.2f} ms")
        over = [(le, t["enqueue_count"] - c) for le, c in t["enqueue_buckets"] if le in (0.1, 0.25)]
        row("enqueues slower than 100 / 250 ms", " / ".join(f"{n:.0f}" for _, n in over))
        row("smtp-source CPU (client)", f"{t['client_cpu_s'] * 1000 / t['messages']:.3f} ms/msg")
    if s:
        row("ceiling: smtp-source -> smtp-sink", f"{s['msgs_per_s']:.0f} msg/s ({s['wall_s']:.2f} s)")
        if t:
            row("relay / ceiling", f"{t['msgs_per_s'] / s['msgs_per_s']:.0%}")
    if i:
        row("idle connections held", f"{i['held']} / {i['requested']} (opened in {i['connect_ms']} ms)",
            f"{i['requested']}", i["held"] == i["requested"] and i["still_open_at_release"] == i["held"])
        row("sessions open (metric) held / after", f"{i['connections_active_metric']:.0f} / "
            f"{i['connections_active_after_release']:.0f}")
        row("relay VmRSS before / held / released",
            f"{i['rss_before_kib'] / 1024:.1f} / {i['rss_held_kib'] / 1024:.1f} / "
            f"{i['rss_after_release_kib'] / 1024:.1f} MiB")
        row("memory per idle connection", f"{i['kib_per_idle_connection']:.1f} KiB",
            f"< {GOAL_IDLE_KIB_PER_CONN:.0f} KiB", i["kib_per_idle_connection"] < GOAL_IDLE_KIB_PER_CONN)
        row("new EHLO session while held", f"{'ok' if i['ehlo_while_held_ok'] else 'FAILED'}"
            f" ({i['ehlo_while_held_ms']:.1f} ms)", "answers", i["ehlo_while_held_ok"])
    w = [max(len(r[k]) for r in rows + [("measure", "value", "goal", "")]) for k in range(4)]
    lines = [f"{'measure':<{w[0]}}  {'value':<{w[1]}}  {'goal':<{w[2]}}  result", "-" * (sum(w) + 12)]
    lines += [f"{a:<{w[0]}}  {b:<{w[1]}}  {c:<{w[2]}}  {d}".rstrip() for a, b, c, d in rows]
    return "\n".join(lines), goals_ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=20000, help="smtp-source -m (default 20000)")
    ap.add_argument("--sessions", type=int, default=20, help="smtp-source -s (default 20)")
    ap.add_argument("--size", type=int, default=4096, help="smtp-source -l, payload bytes (default 4096)")
    ap.add_argument("--reuse", action="store_true",
                    help="smtp-source -d: several messages per connection (the issue's load opens one per message)")
    ap.add_argument("--idle", type=int, default=10000, help="idle connections to hold (default 10000; 0 skips)")
    ap.add_argument("--idle-sources", type=int, default=10, help="loopback source addresses for them (127.0.0.10...)")
    ap.add_argument("--hold", type=int, default=120, help="longest hold of the idle connections, s")
    ap.add_argument("--connect-timeout", type=float, default=120, help="longest time to open the idle connections, s")
    ap.add_argument("--source-timeout", type=float, default=600, help="longest smtp-source run, s")
    ap.add_argument("--skip-build", action="store_true", help="use the binaries already built")
    ap.add_argument("--skip-sink", action="store_true", help="skip the smtp-source -> smtp-sink reference")
    ap.add_argument("--skip-throughput", action="store_true", help="skip the relay throughput run")
    ap.add_argument("--json", type=Path, help="also write every figure to this file as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, spools, logs)")
    ap.add_argument("--check", action="store_true", help="exit 3 when a goal is missed")
    ap.add_argument("--smtp-source", default=shutil.which("smtp-source") or "/usr/sbin/smtp-source")
    ap.add_argument("--smtp-sink", default=shutil.which("smtp-sink") or "/usr/sbin/smtp-sink")
    args = ap.parse_args()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    for tool in (args.smtp_source, args.smtp_sink):
        if not os.access(tool, os.X_OK):
            raise BenchError(f"{tool} not found: apt-get install postfix (its smtp-source and smtp-sink)")
    if args.idle:
        need = args.idle + 1024
        got = raise_fd_limit(need)
        if got < need:
            raise BenchError(f"{args.idle} idle connections need {need} open files per process; "
                             f"RLIMIT_NOFILE allows {got} (lower --idle or raise `ulimit -Hn`)")

    if not args.skip_build:
        build("--bin", "sluice", "--example", "idle_connections")
    target = cargo_target_dir() / "release"
    binary, example = target / "sluice", target / "examples" / "idle_connections"
    for f in (binary, example):
        if not f.exists():
            raise BenchError(f"{f} not built (run without --skip-build)")

    workdir = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    log(f"work directory {workdir} (spools and relay logs)")
    res: dict = {"machine": {"cpus": os.cpu_count(), "clk_tck": CLK_TCK, "kernel": os.uname().release,
                             "loadavg_at_start": os.getloadavg()},
                 "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                          capture_output=True, text=True).stdout.strip()}
    errors: list[str] = []
    completed = False
    try:
        if not args.skip_sink:
            res["sink"] = sink_reference(args, workdir)
        if not args.skip_throughput:
            res["throughput"] = throughput(args, binary, workdir)
            errors += res["throughput"]["errors"]
        if args.idle:
            res["idle"] = idle(args, binary, example, workdir)
            errors += res["idle"]["errors"]
        completed = True
    finally:
        stop_all()
        if not completed:
            log(f"configs, spools and logs kept in {workdir}")
        elif not args.keep and not errors:
            shutil.rmtree(workdir, ignore_errors=True)

    table, goals_ok = summary(args, res)
    print()
    load = res["machine"]["loadavg_at_start"]
    res["machine"]["loadavg_at_end"] = os.getloadavg()
    print(f"Sluice acceptance benchmark, commit {res['commit']}, {res['machine']['cpus']} CPUs, "
          f"load average {load[0]:.2f} at start, {res['machine']['loadavg_at_end'][0]:.2f} at end")
    if load[0] > 0.5 * (os.cpu_count() or 1):
        print("(the machine was busy with other work at the start: figures may be low; run again when idle)")
    print(table)
    for phase in ("throughput", "idle"):
        r = res.get(phase)
        if not r:
            continue
        if r["relay_exit_code"] not in (0, None):
            errors.append(f"{phase} relay exited with {r['relay_exit_code']}")
        if r["relay_log_problems"]:
            print(f"\n{phase} relay log: {len(r['relay_log_problems'])} WARN/ERROR lines, first ones:")
            for line in r["relay_log_problems"][:10]:
                print("  " + line)
        else:
            print(f"\n{phase} relay log: no WARN/ERROR lines")
    for phase in ("sink", "throughput"):
        r = res.get(phase)
        if r and r["source_stderr"]:
            print(f"\nsmtp-source stderr ({phase}):\n  " + r["source_stderr"][-1500:].replace("\n", "\n  "))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str) + "\n")
        print(f"\nfigures written to {args.json}")
    if errors:
        print("\nINVALID RUN:\n  " + "\n  ".join(errors))
        print(f"(configs, spools and logs kept in {workdir})")
        return 1
    if args.check and not goals_ok:
        return 3
    return 0


if __name__ == "__main__":
    run_main(main)
