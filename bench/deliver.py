#!/usr/bin/env python3
"""Sluice end-to-end delivery benchmark, side by side with Postfix in the same run:
smtp-source -> relay -> smtp-sink, until the sink has every message.

    python3 bench/deliver.py            # build, measure, print the side-by-side table

What it does (see bench/README.md for the why and how to read the figures):

1. `cargo build --release --bin sluice`.
2. Ceiling: smtp-source straight into smtp-sink, the same load.
3. Sluice: `sluice standalone` on a fresh spool (fsync on every commit, always), with a
   RelayPolicy route sending every domain to the smtp-sink; `smtp-source -s 20 -m 20000
   -l 4096` at it, then a bounded wait until the sink has received all 20,000. Messages
   per second from the first message sent to the last one delivered, acceptance rate,
   the relay's CPU per message (/proc/PID/stat), acceptance -> delivery latency from the
   relay's `sluice_delivery_seconds` histogram.
4. Postfix: a private Postfix instance (`postfix -c DIR`, its own main.cf, master.cf and
   queue in the temporary directory) as a relay to a fresh smtp-sink, the same load, the
   same wait; CPU of the master and every process under it (exited ones included, through
   the master's cutime/cstime), latency from the `delay=` of its log.
5. A side-by-side table; `--json FILE` keeps every figure.

Loopback only; every wait is bounded; every process started (Postfix included) is
stopped on exit and on Ctrl-C. Python 3.11 standard library only. This is a benchmark
for people, never a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import tempfile
import time
from pathlib import Path

from common import (
    run_main,
    CLK_TCK, POLICY, BenchError, _on_signal, add_load_args, add_postfix_args,
    add_tool_args, add_wait_args, build, cargo_target_dir, ceiling, check_tools, commit,
    cpu_seconds, drive, free_port, histogram, histogram_delta, labeled, launch_relay, log,
    log_problems, postfix_run, queue_len, quantile, sink_sessions, sluice_config, start_sink,
    stop_all, tail, wait_until,
)

# Reference figures measured on this machine with the same load (from the task): Postfix
# 3.7 as a relay ~400 msg/s end to end at ~3.8 ms CPU per message. This script measures
# Postfix itself; these are only printed for comparison.
POSTFIX_REFERENCE_MSGS_PER_S = 400.0
GOAL_RATIO = 3.0


# ---------------------------------------------------------------------------------------
# Sluice.




def sluice_run(args, binary: Path, workdir: Path, concurrency: int, per_destination: int) -> dict:
    name = f"sluice-c{concurrency}-p{per_destination}"
    d = workdir / name
    d.mkdir()
    sink = start_sink(args.smtp_sink, d / "sink.log")
    smtp, admin, dns = free_port(), free_port(), free_port()
    while len({smtp, admin, dns, sink.port}) < 4:
        admin, dns = free_port(), free_port()
    (d / "policy.yaml").write_text(POLICY.format(sink=sink.port))
    (d / "sluice.yaml").write_text(sluice_config(
        concurrency, per_destination, dns=dns, smtp=smtp, admin=admin))
    relay = launch_relay(binary, d, name, smtp, admin)
    sent = 'sluice_deliveries_total{route="smarthost",status="sent"}'

    def alive():
        if relay.proc.poll() is not None:
            raise BenchError(f"the relay exited with {relay.proc.returncode}:\n{tail(relay.log_path)}")

    try:
        m0 = relay.metrics()
        cpu0 = cpu_seconds(relay.pid)
        r = drive(args, smtp, sink, alive)
        # Delivered at the sink; the relay settles each outcome after the 250 (removes the
        # message from the spool): wait for the counter and an empty queue.
        wait_until("all deliveries counted as sent",
                   lambda: relay.metrics().get(sent, 0) - m0.get(sent, 0) >= args.messages,
                   args.settle_timeout)
        wait_until("the queue is empty", lambda: queue_len(admin) == 0, args.settle_timeout)
        r["settled_s"] = time.monotonic()  # replaced below by a duration
        cpu1 = cpu_seconds(relay.pid)
        m1 = relay.metrics()
        relay.shutdown()
        r["sink_sessions"] = sink_sessions(sink)
    finally:
        relay.shutdown()
        sink.close()
    accepted = m1.get("sluice_messages_accepted_total", 0) - m0.get("sluice_messages_accepted_total", 0)
    deliveries = {k: v - m0.get(k, 0) for k, v in labeled(m1, "sluice_deliveries_total").items()
                  if v - m0.get(k, 0)}
    replies = {k: v - m0.get(k, 0) for k, v in labeled(m1, "sluice_delivery_replies_total").items()
               if v - m0.get(k, 0)}
    buckets, count, total = histogram_delta(histogram(m1, "sluice_delivery_seconds"),
                                            histogram(m0, "sluice_delivery_seconds"))
    ebuckets, ecount, etotal = histogram_delta(histogram(m1, "sluice_enqueue_seconds"),
                                               histogram(m0, "sluice_enqueue_seconds"))
    p50, p99 = quantile(buckets, count, 0.5), quantile(buckets, count, 0.99)
    ep99 = quantile(ebuckets, ecount, 0.99)
    cpu = cpu1 - cpu0
    del r["settled_s"]
    r.update({
        "concurrency": concurrency,
        "per_destination": per_destination,
        "accepted": accepted,
        "deliveries": deliveries,
        "delivery_replies": replies,
        "relay_cpu_s": cpu,
        "cpu_ms_per_msg": cpu * 1000 / args.messages,
        "cpu_cores_busy": cpu / r["last_delivered_s"],
        "delivery_count": count,
        "delivery_mean_ms": total / count * 1000 if count else float("nan"),
        "delivery_p50_bucket_ms": p50[0] * 1000,
        "delivery_p50_interpolated_ms": p50[1] * 1000,
        "delivery_p99_bucket_ms": p99[0] * 1000,
        "delivery_p99_interpolated_ms": p99[1] * 1000,
        "delivery_buckets": [[le, c] for le, c in buckets],
        "enqueue_p99_bucket_ms": ep99[0] * 1000,
        "enqueue_mean_ms": etotal / ecount * 1000 if ecount else float("nan"),
        "rejected": labeled(m1, "sluice_messages_rejected_total"),
        "connections_refused": labeled(m1, "sluice_connections_refused_total"),
        "relay_exit_code": relay.exit_code,
        "relay_log_problems": log_problems(relay.log_path),
        "relay_log": str(relay.log_path),
        "relay_log_bytes": relay.log_path.stat().st_size,
    })
    errors = []
    if accepted != args.messages:
        errors.append(f"{name}: the relay accepted {accepted:.0f} messages, not {args.messages}")
    if r["sink_messages"] != args.messages:
        errors.append(f"{name}: the sink received {r['sink_messages']} messages, not {args.messages}")
    if count != args.messages:
        errors.append(f"{name}: the delivery histogram counted {count:.0f}, not {args.messages}")
    if r["rejected"] or r["connections_refused"]:
        errors.append(f"{name}: rejections {r['rejected']}, refusals {r['connections_refused']}")
    if relay.exit_code not in (0, None):
        errors.append(f"{name}: the relay exited with {relay.exit_code}")
    r["errors"] = errors
    log(f"{name}: {r['e2e_msgs_per_s']:.0f} msg/s end to end, {r['cpu_ms_per_msg']:.3f} ms CPU/msg, "
        f"p99 <= {r['delivery_p99_bucket_ms']:g} ms, sink sessions {r['sink_sessions']}")
    return r


# ---------------------------------------------------------------------------------------
# Summary.

def status_of(key: str) -> str:
    m = re.search(r'status="(\w+)"', key)
    return m.group(1) if m else key


def ms(v: float) -> str:
    return "n/a" if v != v else f"{v:.3f}"


def summary(args, res: dict) -> str:
    s, p, c = res.get("sluice"), res.get("postfix"), res.get("ceiling")
    rows: list[tuple[str, str, str, str]] = []

    def row(what, sl="", pf="", ratio=""):
        rows.append((what, sl, pf, ratio))

    if s or p:
        def ratio(a, b, fmt="{:.2f}x"):
            return fmt.format(a / b) if a and b else ""
        sv = s or {}
        pv = p or {}
        get = lambda d, k: d.get(k, float("nan"))  # noqa: E731
        row("", "Sluice", f"Postfix {pv.get('postfix_version', '')}".strip(), "Sluice/Postfix")
        row("end to end msg/s (1st sent -> last delivered)",
            f"{get(sv, 'e2e_msgs_per_s'):.0f} ({get(sv, 'last_delivered_s'):.2f} s)" if s else "-",
            f"{get(pv, 'e2e_msgs_per_s'):.0f} ({get(pv, 'last_delivered_s'):.2f} s)" if p else "-",
            ratio(sv.get("e2e_msgs_per_s"), pv.get("e2e_msgs_per_s")))
        row("acceptance msg/s (smtp-source run)",
            f"{get(sv, 'accept_msgs_per_s'):.0f}" if s else "-",
            f"{get(pv, 'accept_msgs_per_s'):.0f}" if p else "-",
            ratio(sv.get("accept_msgs_per_s"), pv.get("accept_msgs_per_s")))
        row("CPU ms per message (all relay processes)",
            ms(get(sv, "cpu_ms_per_msg")) if s else "-", ms(get(pv, "cpu_ms_per_msg")) if p else "-",
            ratio(pv.get("cpu_ms_per_msg"), sv.get("cpu_ms_per_msg"), "{:.1f}x less") if s and p else "")
        row("CPU cores busy (over the end-to-end time)",
            f"{get(sv, 'cpu_cores_busy'):.2f}" if s else "-", f"{get(pv, 'cpu_cores_busy'):.2f}" if p else "-")
        row("p50 acceptance -> delivery",
            f"<= {get(sv, 'delivery_p50_bucket_ms'):g} ms (bucket)" if s else "-",
            f"{get(pv, 'delay_p50_ms'):.0f} ms (log)" if p else "-")
        row("p99 acceptance -> delivery",
            f"<= {get(sv, 'delivery_p99_bucket_ms'):g} ms (bucket)" if s else "-",
            f"{get(pv, 'delay_p99_ms'):.0f} ms (log), <= {get(pv, 'delay_p99_bucket_ms'):g} ms (bucket)"
            if p else "-")
        row("mean / max acceptance -> delivery",
            f"mean {get(sv, 'delivery_mean_ms'):.0f} ms" if s else "-",
            f"mean {get(pv, 'delay_mean_ms'):.0f} ms, max {get(pv, 'delay_max_ms'):.0f} ms" if p else "-")
        row("received by the sink / over sessions",
            f"{sv['sink_messages']} / {sv['sink_sessions']}" if s else "-",
            f"{pv['sink_messages']} / {pv['sink_sessions']}" if p else "-")
        if s:
            row("Sluice deliveries by status", ", ".join(
                f"{status_of(k)}={v:.0f}" for k, v in sv["deliveries"].items()))
            row("Sluice p99 enqueue (end of data -> 250)", f"<= {sv['enqueue_p99_bucket_ms']:g} ms (bucket)")
        if s and p:
            r = sv["e2e_msgs_per_s"] / pv["e2e_msgs_per_s"]
            row(f"goal: Sluice >= {GOAL_RATIO:g}x Postfix end to end", f"{r:.2f}x", "",
                "PASS" if r >= GOAL_RATIO else "FAIL")
    for v in res.get("variants", []):
        row(f"Sluice concurrency {v['concurrency']}, perDestination {v['per_destination']}",
            f"{v['e2e_msgs_per_s']:.0f} msg/s, {v['cpu_ms_per_msg']:.3f} ms CPU, "
            f"p99 <= {v['delivery_p99_bucket_ms']:g} ms, {v['sink_sessions']} sink sessions")
    if c:
        row("ceiling: smtp-source -> smtp-sink", f"{c['e2e_msgs_per_s']:.0f} msg/s ({c['last_delivered_s']:.2f} s)")
        if s:
            row("Sluice / ceiling", f"{s['e2e_msgs_per_s'] / c['e2e_msgs_per_s']:.0%}")
    row("reference: Postfix measured here before", f"~{POSTFIX_REFERENCE_MSGS_PER_S:.0f} msg/s, ~3.8 ms CPU/msg")
    w = [max(len(r[k]) for r in rows) for k in range(4)]
    lines = [f"{a:<{w[0]}}  {b:<{w[1]}}  {c2:<{w[2]}}  {d}".rstrip() for a, b, c2, d in rows]
    lines.insert(1, "-" * (sum(w) + 6))
    head = [f"load: smtp-source -s {args.sessions} -m {args.messages} -l {args.size}"
            + (" -d" if args.reuse else "") + " -> relay -> smtp-sink, all on 127.0.0.1"]
    if s:
        head.append(f"Sluice: delivery.concurrency {s['concurrency']}, perDestination {s['per_destination']}, "
                    "spool fsync on every commit (always)")
    if p:
        head.append(f"Postfix: default_process_limit {p['process_limit']}, (smtp_|default_)destination_"
                    f"concurrency_limit {p['destination_concurrency']}, its default fsync of each queue file")
    return "\n".join(head + [""] + lines)


def parse_variant(text: str) -> tuple[int, int]:
    try:
        c, p = text.split("/")
        return int(c), int(p)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected CONCURRENCY/PERDESTINATION, e.g. 50/20")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_load_args(ap)
    ap.add_argument("--concurrency", type=int, default=100,
                    help="Sluice delivery.concurrency for the headline run (default 100, the default)")
    ap.add_argument("--per-destination", type=int, default=20,
                    help="Sluice delivery.perDestination for the headline run (default 20, the default)")
    ap.add_argument("--variant", type=parse_variant, action="append", default=[], metavar="C/P",
                    help="also run Sluice with concurrency C and perDestination P (repeatable)")
    add_postfix_args(ap)
    add_wait_args(ap)
    ap.add_argument("--skip-build", action="store_true", help="use the binary already built")
    ap.add_argument("--skip-ceiling", action="store_true", help="skip smtp-source -> smtp-sink")
    ap.add_argument("--skip-sluice", action="store_true", help="skip the Sluice runs")
    ap.add_argument("--skip-postfix", action="store_true", help="skip the Postfix run")
    ap.add_argument("--json", type=Path, help="also write every figure to this file as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, spools, logs)")
    add_tool_args(ap)
    args = ap.parse_args()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    check_tools(args, postfix=not args.skip_postfix)

    if not args.skip_sluice:
        if not args.skip_build:
            build("--bin", "sluice")
        binary = cargo_target_dir() / "release" / "sluice"
        if not binary.exists():
            raise BenchError(f"{binary} not built (run without --skip-build)")

    workdir = Path(tempfile.mkdtemp(prefix="sluice-deliver-"))
    workdir.chmod(0o755)  # Postfix's daemons, running as postfix, must reach their directories
    log(f"work directory {workdir} (configs, spools, logs)")
    res: dict = {"machine": {"cpus": os.cpu_count(), "clk_tck": CLK_TCK, "kernel": os.uname().release,
                             "loadavg_at_start": os.getloadavg()},
                 "commit": commit(),
                 "load": {"messages": args.messages, "sessions": args.sessions, "size": args.size,
                          "reuse": args.reuse}}
    errors: list[str] = []
    completed = False
    try:
        if not args.skip_ceiling:
            res["ceiling"] = ceiling(args, workdir)
        if not args.skip_sluice:
            res["sluice"] = sluice_run(args, binary, workdir, args.concurrency, args.per_destination)
            errors += res["sluice"]["errors"]
        if not args.skip_postfix:
            res["postfix"] = postfix_run(args, workdir)
            errors += res["postfix"]["errors"]
        if not args.skip_sluice:
            res["variants"] = []
            for c, p in args.variant:
                v = sluice_run(args, binary, workdir, c, p)
                res["variants"].append(v)
                errors += v["errors"]
        completed = True
    finally:
        stop_all()
        if not completed:
            log(f"configs, spools and logs kept in {workdir}")
        elif not args.keep and not errors:
            shutil.rmtree(workdir, ignore_errors=True)

    res["machine"]["loadavg_at_end"] = os.getloadavg()
    load = res["machine"]["loadavg_at_start"]
    print()
    print(f"Sluice end-to-end delivery benchmark, commit {res['commit']}, {res['machine']['cpus']} CPUs, "
          f"load average {load[0]:.2f} at start, {res['machine']['loadavg_at_end'][0]:.2f} at end")
    if load[0] > 0.5 * (os.cpu_count() or 1):
        print("(the machine was busy with other work at the start: figures may be low; run again when idle)")
    print(summary(args, res))
    for key in ["sluice"] + [f"variant {i}" for i in range(len(res.get("variants", [])))]:
        r = res.get("sluice") if key == "sluice" else res["variants"][int(key.split()[1])]
        if not r:
            continue
        probs = r["relay_log_problems"]
        print(f"\n{key} relay log: " + (f"{len(probs)} WARN/ERROR lines, first ones:" if probs
                                       else "no WARN/ERROR lines"))
        for line in probs[:10]:
            print("  " + line)
    if res.get("postfix"):
        probs = res["postfix"]["log_problems"]
        print("\npostfix log: " + (f"{len(probs)} warning/error lines, first ones:" if probs
                                   else "no warning/error lines"))
        for line in probs[:10]:
            print("  " + line)
    for key in ("ceiling", "sluice", "postfix"):
        r = res.get(key)
        if r and r["source_stderr"]:
            print(f"\nsmtp-source stderr ({key}):\n  " + r["source_stderr"][-1500:].replace("\n", "\n  "))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str) + "\n")
        print(f"\nfigures written to {args.json}")
    if errors:
        print("\nINVALID RUN:\n  " + "\n  ".join(errors))
        print(f"(configs, spools and logs kept in {workdir})")
        return 1
    return 0


if __name__ == "__main__":
    run_main(main)
