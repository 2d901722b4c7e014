#!/usr/bin/env python3
"""Sluice scale-out benchmark: the Kubernetes roles as separate processes on NATS
JetStream, 1 ingress + 1 worker and 2 ingress + 2 workers, beside `sluice standalone`
(embedded spool and --jetstream) and Postfix, all in the same run:
smtp-source -> relay -> smtp-sink, until the sink has every message.

    python3 bench/scale.py                  # build, measure, print a markdown table

Variants, each on a fresh smtp-sink (and, on JetStream, a fresh nats-server store):

1. ceiling: smtp-source straight into smtp-sink (and the same from two smtp-source
   processes of half the sessions and messages each, as the 2 + 2 variant is driven);
2. 1 ingress + 1 worker: `sluice ingress` and `sluice worker` on `nats-server -js`, the
   policy pushed into NATS with `sluice policy push`;
3. 2 ingress + 2 workers: the same with two of each; the load is two smtp-source
   processes started together, one per ingress, each with half the sessions and half the
   messages;
4. `sluice standalone` on its embedded spool (fsync on every commit);
5. `sluice standalone --jetstream` (one process, on the nats-server);
6. Postfix, the private relay of bench/deliver.py.

For each: delivered msg/s (every message at the sink / time from the first send to the
last delivery), p99 end of data -> 250 merged over the accepting processes (histogram
buckets), CPU microseconds per message for each role, nats-server and their sum
(/proc/PID/stat), duplicates at the sink, and whether every message is accounted for.
See bench/README.md for how to read the figures.

Loopback only; every wait is bounded; every process started is stopped on exit and on
Ctrl-C. Python 3.11 standard library only. A benchmark for people, never a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    run_main,
    CLK_TCK, POLICY, BenchError, NatsServer, Relay, Sink, _on_signal, add_load_args,
    add_postfix_args, add_tool_args, add_wait_args, build, cargo_target_dir, ceiling,
    check_tools, commit, cpu_seconds, drive, free_port, histogram, histogram_delta, labeled,
    launch_role, log, log_problems, nats_version, postfix_run, queue_len, quantile,
    sink_sessions, sluice_config, start_nats, start_sink, stop_all, tail, wait_until,
)

SENT = 'sluice_deliveries_total{route="smarthost",status="sent"}'

# Every Sluice process of a variant reads `common.sluice_config(...)`. Listener and admin
# addresses and the NATS URL are given as flags (`--smtp 127.0.0.1:0 --admin 127.0.0.1:0
# --ports-file F --nats-url URL`); `policies` is what `sluice policy push` reads for the
# ingress and worker roles, and what standalone reads itself. The file's listener (which
# --smtp replaces) and spool are for the standalone variants; the JetStream roles ignore
# the spool.


@dataclass
class Variant:
    key: str
    title: str
    kind: str  # "roles", "standalone", "standalone-js"
    ingress: int = 0
    workers: int = 0


SLUICE_VARIANTS = {
    "1+1": Variant("1+1", "1 ingress + 1 worker (JetStream)", "roles", 1, 1),
    "2+2": Variant("2+2", "2 ingress + 2 workers (JetStream)", "roles", 2, 2),
    "spool": Variant("spool", "standalone, embedded spool", "standalone"),
    "standalone-js": Variant("standalone-js", "standalone --jetstream", "standalone-js"),
}
ORDER = ["ceiling", "ceiling-2", "1+1", "2+2", "spool", "standalone-js", "postfix"]
TITLES = {"ceiling": "ceiling: smtp-source -> smtp-sink",
          "ceiling-2": "ceiling, 2 smtp-source processes",
          "postfix": "Postfix",
          **{k: v.title for k, v in SLUICE_VARIANTS.items()}}


# ---------------------------------------------------------------------------------------
# One Sluice variant.

def merged(procs: list[Relay], m0: dict, m1: dict, name: str):
    """A histogram's growth over the run, summed over processes: (buckets, count, sum)."""
    total: dict[float, float] = {}
    count = sums = 0.0
    for p in procs:
        b, c, s = histogram_delta(histogram(m1[p.name], name), histogram(m0[p.name], name))
        for le, v in b:
            total[le] = total.get(le, 0.0) + v
        count += c
        sums += s
    return sorted(total.items()), count, sums


def delta_sum(procs: list[Relay], m0: dict, m1: dict, key: str) -> float:
    return sum(m1[p.name].get(key, 0.0) - m0[p.name].get(key, 0.0) for p in procs)


def labeled_delta(procs: list[Relay], m0: dict, m1: dict, prefix: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for p in procs:
        for k, v in labeled(m1[p.name], prefix).items():
            d = v - m0[p.name].get(k, 0.0)
            if d:
                out[k] = out.get(k, 0.0) + d
    return out


def sink_quiet(sink: Sink) -> tuple[int, int]:
    """(messages, sessions) the sink counted during the load, read once its counters have
    stopped moving (after the relay has stopped): see sink_sessions."""
    sessions = sink_sessions(sink)
    return sink.counters()[0] - sink.base_messages, sessions


@dataclass
class Procs:
    nats: NatsServer | None = None
    ingress: list[Relay] = field(default_factory=list)  # processes that accept (ingress, standalone)
    workers: list[Relay] = field(default_factory=list)  # processes that deliver (worker, standalone)
    all: list[Relay] = field(default_factory=list)

    def alive(self) -> None:
        for p in self.all:
            if p.proc.poll() is not None:
                raise BenchError(f"{p.name} exited with {p.proc.returncode}:\n{tail(p.log_path)}")
        if self.nats and self.nats.proc.poll() is not None:
            raise BenchError(f"nats-server exited with {self.nats.proc.returncode}:\n"
                             f"{tail(self.nats.log_path)}")

    def shutdown(self) -> None:
        """Ingress first (no new mail), then the workers, then nats-server."""
        for p in [p for p in self.all if p not in self.workers] + self.workers:
            p.shutdown()
        if self.nats:
            self.nats.shutdown()


def policy_push(args, binary: Path, d: Path, nats: NatsServer) -> str:
    cmd = [str(binary), "policy", "push", "--config", str(d / "sluice.yaml"), "--nats-url", nats.url]
    log(" ".join(cmd))
    try:
        r = subprocess.run(cmd, cwd=d, capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, NO_COLOR="1"))
    except subprocess.TimeoutExpired as e:
        raise BenchError("sluice policy push did not finish within 60s") from e
    out = (r.stdout + r.stderr).strip()
    if r.returncode != 0:
        raise BenchError(f"sluice policy push exited with {r.returncode}: {out}")
    return out


def sluice_variant(args, binary: Path, workdir: Path, v: Variant) -> dict:
    d = workdir / f"sluice-{v.key.replace('+', 'x')}"
    d.mkdir()
    sink = start_sink(args.smtp_sink, d / "sink.log")
    (d / "policy.yaml").write_text(POLICY.format(sink=sink.port))
    (d / "sluice.yaml").write_text(sluice_config(
        args.concurrency, args.per_destination, dns=free_port()))
    cfg = ["--config", str(d / "sluice.yaml")]
    procs = Procs()
    r: dict = {"variant": v.key, "title": v.title}
    try:
        if v.kind != "standalone":
            procs.nats = start_nats(args.nats_server, d)
            nats_flags = ["--nats-url", procs.nats.url]
        if v.kind == "roles":
            r["policy_push"] = policy_push(args, binary, d, procs.nats)
            for i in range(v.workers):
                w = launch_role(binary, d, f"worker-{i + 1}",
                                ["worker", *cfg, *nats_flags, "--hostname", f"worker-{i + 1}.bench.test"],
                                smtp=False)
                procs.workers.append(w)
                procs.all.append(w)
            for i in range(v.ingress):
                g = launch_role(binary, d, f"ingress-{i + 1}",
                                ["ingress", *cfg, *nats_flags, "--hostname", f"ingress-{i + 1}.bench.test"],
                                smtp=True)
                procs.ingress.append(g)
                procs.all.append(g)
        else:
            argv = ["standalone", *cfg] + (["--jetstream", *nats_flags] if v.kind == "standalone-js" else [])
            s = launch_role(binary, d, "standalone", argv, smtp=True)
            procs.ingress.append(s)
            procs.workers.append(s)
            procs.all.append(s)

        m0 = {p.name: p.metrics() for p in procs.all}
        cpu0 = {p.name: cpu_seconds(p.pid) for p in procs.all}
        if procs.nats:
            cpu0["nats-server"] = cpu_seconds(procs.nats.proc.pid)
        r.update(drive(args, [p.smtp for p in procs.ingress], sink, procs.alive))
        # Every message at the sink; each delivery is settled (acked, removed from the
        # queue) after the sink's 250: wait for the counters and an empty queue.
        wait_until("all deliveries counted as sent",
                   lambda: delta_sum(procs.workers, m0, {p.name: p.metrics() for p in procs.workers},
                                     SENT) >= args.messages,
                   args.settle_timeout)
        wait_until("the queue is empty", lambda: queue_len(procs.workers[0].admin) == 0,
                   args.settle_timeout)
        cpu1 = {p.name: cpu_seconds(p.pid) for p in procs.all}
        if procs.nats:
            cpu1["nats-server"] = cpu_seconds(procs.nats.proc.pid)
        m1 = {p.name: p.metrics() for p in procs.all}
        procs.shutdown()
        r["sink_messages_final"], r["sink_sessions"] = sink_quiet(sink)
    finally:
        procs.shutdown()
        sink.close()
    n = args.messages
    accepted = delta_sum(procs.ingress, m0, m1, "sluice_messages_accepted_total")
    sent = delta_sum(procs.workers, m0, m1, SENT)
    eb, ec, es = merged(procs.ingress, m0, m1, "sluice_enqueue_seconds")
    db, dc, ds = merged(procs.workers, m0, m1, "sluice_delivery_seconds")
    ep50, ep99 = quantile(eb, ec, 0.5), quantile(eb, ec, 0.99)
    dp50, dp99 = quantile(db, dc, 0.5), quantile(db, dc, 0.99)
    cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
    roles: dict[str, list[float]] = {}
    for p in procs.all:
        role = p.name.split("-")[0]
        roles.setdefault(role, []).append(cpu[p.name])
    if procs.nats:
        roles["nats-server"] = [cpu["nats-server"]]
    relay_cpu = sum(cpu.values())
    r.update({
        "ingress_processes": len([p for p in procs.all if p.name.startswith("ingress")]),
        "worker_processes": len([p for p in procs.all if p.name.startswith("worker")]),
        "accepted": accepted,
        "deliveries_sent": sent,
        "deliveries": labeled_delta(procs.workers, m0, m1, "sluice_deliveries_total"),
        "delivery_replies": labeled_delta(procs.workers, m0, m1, "sluice_delivery_replies_total"),
        "rejected": labeled_delta(procs.ingress, m0, m1, "sluice_messages_rejected_total"),
        "connections_refused": labeled_delta(procs.ingress, m0, m1, "sluice_connections_refused_total"),
        "accepted_by_process": {p.name: m1[p.name].get("sluice_messages_accepted_total", 0)
                                - m0[p.name].get("sluice_messages_accepted_total", 0) for p in procs.ingress},
        "sent_by_process": {p.name: m1[p.name].get(SENT, 0) - m0[p.name].get(SENT, 0) for p in procs.workers},
        "cpu_s_by_process": cpu,
        "cpu_s_by_role": roles,
        "relay_cpu_s": relay_cpu,
        "relay_cpu_us_per_msg": relay_cpu * 1e6 / n,
        "enqueue_count": ec,
        "enqueue_mean_ms": es / ec * 1000 if ec else float("nan"),
        "enqueue_p50_bucket_ms": ep50[0] * 1000,
        "enqueue_p99_bucket_ms": ep99[0] * 1000,
        "enqueue_p99_interpolated_ms": ep99[1] * 1000,
        "enqueue_buckets": [[le, c] for le, c in eb],
        "delivery_count": dc,
        "delivery_mean_ms": ds / dc * 1000 if dc else float("nan"),
        "delivery_p50_bucket_ms": dp50[0] * 1000,
        "delivery_p99_bucket_ms": dp99[0] * 1000,
        "delivery_buckets": [[le, c] for le, c in db],
        "exit_codes": {p.name: p.exit_code for p in procs.all},
        "log_problems": {p.name: log_problems(p.log_path) for p in procs.all},
        "logs": {p.name: str(p.log_path) for p in procs.all},
    })
    if procs.nats:
        r["nats_exit_code"] = procs.nats.exit_code
        r["log_problems"]["nats-server"] = procs.nats.problems()
        r["logs"]["nats-server"] = str(procs.nats.log_path)
    errors = []
    name = v.title
    final = r["sink_messages_final"]
    if final < n:
        errors.append(f"{name}: LOST: the sink received {final} messages of {n}")
    elif final > n:
        errors.append(f"{name}: DUPLICATES: the sink received {final} messages for {n} sent")
    if accepted != n:
        errors.append(f"{name}: the relay accepted {accepted:.0f} messages, not {n}")
    if sent != n:
        errors.append(f"{name}: the relay counted {sent:.0f} deliveries as sent, not {n}")
    if ec != n:
        errors.append(f"{name}: the enqueue histograms counted {ec:.0f}, not {n}")
    if r["rejected"] or r["connections_refused"]:
        errors.append(f"{name}: rejections {r['rejected']}, refusals {r['connections_refused']}")
    for pname, code in r["exit_codes"].items():
        if code not in (0, None):
            errors.append(f"{name}: {pname} exited with {code}")
    if procs.nats and procs.nats.exit_code not in (0, None):
        errors.append(f"{name}: nats-server exited with {procs.nats.exit_code}")
    r["errors"] = errors
    log(f"{v.title}: {r['e2e_msgs_per_s']:.0f} msg/s delivered, {r['relay_cpu_us_per_msg']:.0f} us CPU/msg, "
        f"p99 enqueue <= {r['enqueue_p99_bucket_ms']:g} ms, sink {final}")
    return r


def postfix_variant(args, workdir: Path) -> dict:
    r = postfix_run(args, workdir)
    r["title"] = "Postfix"
    r["relay_cpu_s"] = r["cpu_s"]
    r["relay_cpu_us_per_msg"] = r["cpu_s"] * 1e6 / args.messages
    r["cpu_s_by_role"] = {"postfix": [r["cpu_s"]]}
    return r


# ---------------------------------------------------------------------------------------
# The table.

def us(seconds: float | None, n: int) -> str:
    return "–" if seconds is None else f"{seconds * 1e6 / n:.0f}"


def role_cell(r: dict, role: str, n: int) -> str:
    xs = r.get("cpu_s_by_role", {}).get(role)
    if not xs:
        return "–"
    total = us(sum(xs), n)
    return total if len(xs) == 1 else f"{total} ({' + '.join(us(x, n) for x in xs)})"


def bucket(ms: float) -> str:
    if ms != ms:
        return "n/a"
    return "> 1 s" if ms == float("inf") else f"≤ {ms:g} ms"


def table(args, res: dict) -> str:
    n = args.messages
    c = res.get("ceiling")
    head = ["variant", "delivered msg/s", "of ceiling", "p99 end of data → 250",
            "p99 accepted → delivered", "CPU µs/msg: ingress", "worker", "nats-server",
            "standalone / Postfix", "relay total", "msg/s per relay core", "load gen µs/msg",
            "sink (dup)", "all accounted"]
    rows = []
    for key in ORDER:
        r = res.get(key)
        if not r:
            continue
        e2e = r["e2e_msgs_per_s"]
        load = (r["client_cpu_s"] + r["sink_cpu_s"]) * 1e6 / n
        final = r["sink_messages_final"]
        dup = max(0, final - n)
        sink = f"{final} ({dup})"
        if key.startswith("ceiling"):
            rows.append([TITLES[key], f"{e2e:.0f}", f"{e2e / c['e2e_msgs_per_s']:.0%}" if c else "",
                         "–", "–", "–", "–", "–", "–", "–", "–", f"{load:.0f}", sink,
                         "yes" if final == n else "NO"])
            continue
        if key == "postfix":
            p99a = "n/a"
            p99d = f"{r['delay_p99_ms']:.0f} ms (log), {bucket(r['delay_p99_bucket_ms'])}"
            one = role_cell(r, "postfix", n)
        else:
            p99a = bucket(r["enqueue_p99_bucket_ms"])
            p99d = bucket(r["delivery_p99_bucket_ms"])
            one = role_cell(r, "standalone", n)
        total = r["relay_cpu_us_per_msg"]
        rows.append([
            TITLES[key], f"{e2e:.0f}", f"{e2e / c['e2e_msgs_per_s']:.0%}" if c else "", p99a, p99d,
            role_cell(r, "ingress", n), role_cell(r, "worker", n), role_cell(r, "nats-server", n), one,
            f"{total:.0f}", f"{1e6 / total:.0f}" if total else "", f"{load:.0f}", sink,
            "yes" if not r["errors"] else "NO (see below)",
        ])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["--:"] * (len(head) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def status_of(key: str) -> str:
    m = re.search(r'status="(\w+)"', key)
    return m.group(1) if m else key


def details(args, res: dict) -> str:
    """A second table: acceptance rate, cores busy, connections to the sink, statuses."""
    n = args.messages
    head = ["variant", "accepted msg/s (smtp-source run)", "last delivery after", "cores busy (relay + load gen)",
            "sink sessions", "mean end of data → 250", "delivery statuses", "load avg before"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for key in ORDER:
        r = res.get(key)
        if not r:
            continue
        busy = (r.get("relay_cpu_s", 0) + r["client_cpu_s"] + r["sink_cpu_s"]) / r["last_delivered_s"]
        statuses = ", ".join(f"{status_of(k)}={v:.0f}" for k, v in r.get("deliveries", {}).items()) or "–"
        if key == "postfix":
            statuses = f"sent={r['log_sent']} (log)"
        la = r.get("loadavg_before")
        lines.append("| " + " | ".join([
            TITLES[key], f"{r['accept_msgs_per_s']:.0f}", f"{r['last_delivered_s']:.2f} s", f"{busy:.2f}",
            str(r.get("sink_sessions", "")),
            f"{r['enqueue_mean_ms']:.2f} ms" if "enqueue_mean_ms" in r else "–",
            statuses, f"{la[0]:.2f}" if la else "–",
        ]) + " |")
    return "\n".join(lines)


def comparisons(res: dict) -> list[str]:
    out = []
    a, b = res.get("1+1"), res.get("2+2")

    def ratio(x, y):
        return x / y if x and y else float("nan")
    if a and b:
        out.append(f"2+2 vs 1+1: {ratio(b['e2e_msgs_per_s'], a['e2e_msgs_per_s']):.2f}x the throughput, "
                   f"{ratio(b['relay_cpu_us_per_msg'], a['relay_cpu_us_per_msg']):.2f}x the relay CPU per message")
    for key in ("1+1", "2+2"):
        r = res.get(key)
        if not r:
            continue
        for other in ("spool", "standalone-js", "postfix"):
            o = res.get(other)
            if o:
                out.append(f"{key} vs {TITLES[other]}: {ratio(r['e2e_msgs_per_s'], o['e2e_msgs_per_s']):.2f}x "
                           f"the throughput, {ratio(r['relay_cpu_us_per_msg'], o['relay_cpu_us_per_msg']):.2f}x "
                           "the CPU per message")
    return out


# ---------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_load_args(ap)
    ap.add_argument("--concurrency", type=int, default=100,
                    help="Sluice delivery.concurrency of each delivering process (default 100)")
    ap.add_argument("--per-destination", type=int, default=20,
                    help="Sluice delivery.perDestination of each delivering process (default 20)")
    add_postfix_args(ap)
    add_wait_args(ap)
    ap.add_argument("--only", action="append", choices=ORDER, default=[],
                    help="run only this variant (repeatable); default all")
    ap.add_argument("--skip", action="append", choices=ORDER, default=[], help="skip this variant (repeatable)")
    ap.add_argument("--skip-build", action="store_true", help="use the binary already built")
    ap.add_argument("--json", type=Path, help="also write every figure to this file as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, stores, logs)")
    add_tool_args(ap)
    ap.add_argument("--nats-server", default=shutil.which("nats-server") or "nats-server")
    args = ap.parse_args()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    run = [k for k in ORDER if (not args.only or k in args.only) and k not in args.skip]
    if not run:
        raise BenchError("no variant left to run")
    check_tools(args, postfix="postfix" in run)
    sluice = [k for k in run if k in SLUICE_VARIANTS]
    if any(SLUICE_VARIANTS[k].kind != "standalone" for k in sluice) and not shutil.which(args.nats_server):
        raise BenchError(f"{args.nats_server} not found (nats-server on PATH, or --nats-server)")
    if sluice:
        if not args.skip_build:
            build("--bin", "sluice")
        binary = cargo_target_dir() / "release" / "sluice"
        if not binary.exists():
            raise BenchError(f"{binary} not built (run without --skip-build)")

    workdir = Path(tempfile.mkdtemp(prefix="sluice-scale-"))
    workdir.chmod(0o755)  # Postfix's daemons, running as postfix, must reach their directories
    log(f"work directory {workdir} (configs, stores, logs)")
    res: dict = {"machine": {"cpus": os.cpu_count(), "clk_tck": CLK_TCK, "kernel": os.uname().release,
                             "loadavg_at_start": os.getloadavg()},
                 "commit": commit(),
                 "nats_server": nats_version(args.nats_server),
                 "load": {"messages": args.messages, "sessions": args.sessions, "size": args.size,
                          "reuse": args.reuse},
                 "sluice_delivery": {"concurrency": args.concurrency, "per_destination": args.per_destination}}
    errors: list[str] = []
    completed = False
    try:
        for key in run:
            loadavg = os.getloadavg()
            log(f"--- {TITLES[key]} (load average {loadavg[0]:.2f})")
            if key == "ceiling":
                res[key] = ceiling(args, workdir)
            elif key == "ceiling-2":
                res[key] = ceiling(args, workdir, sources=2, name="ceiling-2")
            elif key == "postfix":
                res[key] = postfix_variant(args, workdir)
            else:
                res[key] = sluice_variant(args, binary, workdir, SLUICE_VARIANTS[key])
            res[key]["loadavg_before"] = loadavg
            if key.startswith("ceiling") and res[key]["sink_messages_final"] != args.messages:
                errors.append(f"{key}: the sink received {res[key]['sink_messages_final']}, not {args.messages}")
            errors += res[key].get("errors", [])
        completed = True
    finally:
        stop_all()
        if not completed:
            log(f"configs, stores and logs kept in {workdir}")
        elif not args.keep and not errors:
            shutil.rmtree(workdir, ignore_errors=True)

    res["machine"]["loadavg_at_end"] = os.getloadavg()
    la0, la1 = res["machine"]["loadavg_at_start"], res["machine"]["loadavg_at_end"]
    print()
    print(f"Sluice scale-out benchmark, commit {res['commit']}, {res['machine']['cpus']} CPUs, "
          f"{res['nats_server']}, load average {la0[0]:.2f} {la0[1]:.2f} {la0[2]:.2f} at start, "
          f"{la1[0]:.2f} {la1[1]:.2f} {la1[2]:.2f} at end")
    if la0[0] > 0.5 * (os.cpu_count() or 1):
        print("(the machine was busy with other work at the start: figures may be low; run again when idle)")
    print(f"load: smtp-source -s {args.sessions} -m {args.messages} -l {args.size}" + (" -d" if args.reuse else "")
          + f" -> relay -> smtp-sink, all on 127.0.0.1; Sluice delivery.concurrency {args.concurrency}, "
          f"perDestination {args.per_destination} per delivering process; nats-server -js -sd DIR "
          "(file store, its default sync)")
    print()
    print(table(args, res))
    print()
    print(details(args, res))
    comp = comparisons(res)
    if comp:
        print()
        for line in comp:
            print(f"- {line}")
    print("\nCPU µs/msg: utime+stime (/proc/PID/stat) from just before the load until the queue is empty, "
          "/ messages; '(a + b)' are the two processes of a role. p99: upper bound of the histogram bucket.")
    for key in ORDER:
        r = res.get(key)
        if not r or key.startswith("ceiling"):
            continue
        probs = r.get("log_problems")
        if key == "postfix":
            probs = {"postfix": r["log_problems"]}
        bad = {k: v for k, v in probs.items() if v}
        print(f"\n{TITLES[key]} logs: " + ("no WARN/ERROR lines" if not bad else ""))
        for pname, lines in bad.items():
            print(f"  {pname}: {len(lines)} WARN/ERROR lines, first ones:")
            for line in lines[:5]:
                print("    " + line[:300])
    for key in ORDER:
        r = res.get(key)
        if r and r.get("source_stderr"):
            print(f"\nsmtp-source stderr ({key}):\n  " + r["source_stderr"][-1500:].replace("\n", "\n  "))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str) + "\n")
        print(f"\nfigures written to {args.json}")
    if errors:
        print("\nINVALID RUN:\n  " + "\n  ".join(errors))
        print(f"(configs, stores and logs kept in {workdir})")
        return 1
    return 0


if __name__ == "__main__":
    run_main(main)
