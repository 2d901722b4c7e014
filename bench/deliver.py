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
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from common import (
    run_main,
    CLK_TCK, RECIPIENT, REPO, SENDER, START_TIMEOUT, BenchError, Sink, _on_signal, build,
    cargo_target_dir, cleanup_done, cpu_seconds, free_port, histogram, histogram_delta, labeled,
    launch_relay, log, log_problems, on_cleanup, quantile, spawn, start_sink, stop, stop_all,
    tail,
)

# Reference figures measured on this machine with the same load (from the task): Postfix
# 3.7 as a relay ~400 msg/s end to end at ~3.8 ms CPU per message. This script measures
# Postfix itself; these are only printed for comparison.
POSTFIX_REFERENCE_MSGS_PER_S = 400.0
GOAL_RATIO = 3.0

POLL = 0.02  # how often the sink's counter is read while the load runs, s

# ---------------------------------------------------------------------------------------
# The shared driver: the load at a relay, until the sink has every message.


def drive(args, port: int, sink: Sink, alive) -> dict:
    """Runs smtp-source at 127.0.0.1:port and watches the sink's counter until it has
    received every message (or a time limit passes). `alive()` raises if the relay died.
    Times are monotonic seconds from the start of smtp-source."""
    cmd = [
        args.smtp_source, "-s", str(args.sessions), "-m", str(args.messages), "-l", str(args.size),
        "-f", SENDER, "-t", RECIPIENT, "-M", "source.bench.test",
    ]
    if args.reuse:
        cmd.append("-d")
    cmd.append(f"127.0.0.1:{port}")
    base_msgs, base_sess = sink.counters()
    log(" ".join(cmd) + f"  (load average {os.getloadavg()[0]:.2f})")
    err_path = sink.log_path.with_name(sink.log_path.stem + "-source.err")
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(err_path, "wb") as errf:
        t0 = time.monotonic()
        src = spawn(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errf)
    source_end = last = None
    client_cpu = float("nan")
    got = 0
    while True:
        now = time.monotonic()
        if source_end is None and src.poll() is not None:
            source_end = now - t0
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            client_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
            stop(src)  # reaped already; only forgets it
            if src.returncode != 0:
                raise BenchError(f"smtp-source exited with {src.returncode}: "
                                 f"{err_path.read_text(errors='replace').strip()[-2000:]}")
        got = sink.counters()[0] - base_msgs
        if got >= args.messages and last is None:
            last = now - t0
        if last is not None and source_end is not None:
            break
        if source_end is None and now - t0 > args.source_timeout:
            raise BenchError(f"smtp-source did not finish within {args.source_timeout}s "
                             f"(the sink has {got} messages)")
        if source_end is not None and now - t0 - source_end > args.deliver_timeout:
            raise BenchError(f"the sink has {got} of {args.messages} messages "
                             f"{args.deliver_timeout}s after the last one was accepted")
        alive()
        time.sleep(POLL)
    msgs, _ = sink.counters()
    sink.base_sessions = base_sess
    log(f"accepted in {source_end:.2f}s, all {args.messages} at the sink after {last:.2f}s")
    return {
        "source_s": source_end,
        "last_delivered_s": last,
        "accept_msgs_per_s": args.messages / source_end,
        "e2e_msgs_per_s": args.messages / last,
        "sink_messages": msgs - base_msgs,
        "client_cpu_s": client_cpu,
        "source_stderr": err_path.read_text(errors="replace").strip(),
    }


def sink_sessions(sink: Sink) -> int:
    """SMTP sessions the sink served during the load. smtp-sink counts a session when it
    ends, so this is read after the relay has stopped (and closed its cached connections),
    once the counter has stopped moving (bounded)."""
    deadline = time.monotonic() + 5
    last = sink.counters()[1]
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = sink.counters()[1]
        if now == last:
            break
        last = now
    return last - sink.base_sessions


def wait_until(what: str, check, timeout: float, interval: float = 0.2):
    """Polls check() until it returns a true value; raises after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = check()
        if v:
            return v
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not so after {timeout}s")
        time.sleep(interval)


def ceiling(args, workdir: Path) -> dict:
    sink = start_sink(args.smtp_sink, workdir / "ceiling-sink.log")
    try:
        r = drive(args, sink.port, sink, lambda: None)
        r["sink_sessions"] = sink_sessions(sink)
    finally:
        sink.close()
    log(f"ceiling: {r['e2e_msgs_per_s']:.0f} msg/s")
    return r


# ---------------------------------------------------------------------------------------
# Sluice.

POLICY = """\
apiVersion: sluice.dev/v1alpha1
kind: RelayPolicy
metadata:
  name: bench
  namespace: mail
spec:
  trustedNetworks: ["127.0.0.1/32"]
  # Every domain goes to the smtp-sink.
  routes:
    - domains: ["*"]
      smarthost: {{ host: "127.0.0.1", port: {sink}, tls: opportunistic }}
"""

CONFIG = """\
hostname: relay.bench.test
listeners:
  - {{ name: smtp, address: "127.0.0.1:{smtp}", kind: relay }}
spool: spool
admin: "127.0.0.1:{admin}"
policies: [policy.yaml]
limits:
  maxConnections: 20000
  maxConnectionsPerIp: 20000
  shutdownGrace: 5s
delivery:
  enabled: true
  concurrency: {concurrency}
  perDestination: {per_destination}
  # The route's smarthost is an IP address: nothing is looked up. Should anything be,
  # ask a loopback port where no server listens rather than the machine's resolver.
  nameserver: "127.0.0.1:{dns}"
  connectTimeout: 10s
log: text
"""


def queue_len(admin: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/queue", timeout=30) as r:
        return len(json.loads(r.read()))


def sluice_run(args, binary: Path, workdir: Path, concurrency: int, per_destination: int) -> dict:
    name = f"sluice-c{concurrency}-p{per_destination}"
    d = workdir / name
    d.mkdir()
    sink = start_sink(args.smtp_sink, d / "sink.log")
    smtp, admin, dns = free_port(), free_port(), free_port()
    while len({smtp, admin, dns, sink.port}) < 4:
        admin, dns = free_port(), free_port()
    (d / "policy.yaml").write_text(POLICY.format(sink=sink.port))
    (d / "sluice.yaml").write_text(CONFIG.format(
        smtp=smtp, admin=admin, dns=dns, concurrency=concurrency, per_destination=per_destination))
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
# Postfix: a private instance in the temporary directory.

POSTFIX_MAIN = """\
# A private Postfix instance for bench/deliver.py: a relay for 127.0.0.0/8 to smtp-sink.
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
# No local delivery: nothing is local, and mail to a local address would fail.
mydestination =
local_recipient_maps =
local_transport = error:local delivery is disabled
alias_maps =
alias_database =
# Everything to the sink, no MX lookup ([]), opportunistic TLS as Sluice's route.
relayhost = [127.0.0.1]:{sink}
smtp_tls_security_level = may
default_process_limit = {process_limit}
default_destination_concurrency_limit = {dest_concurrency}
smtp_destination_concurrency_limit = {dest_concurrency}
# No syslog here: postlogd writes the log (Postfix 3.4+).
maillog_file = {dir}/maillog
maillog_file_prefixes = /var, /dev/stdout, {dir}
"""

# master.cf: Debian's services that a relay uses, none chrooted (the queue directory is
# not set up as a chroot jail), smtpd on a free loopback port.
POSTFIX_MASTER = """\
127.0.0.1:{smtp} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def proc_stat(pid: int) -> list[str] | None:
    """Fields 3... of /proc/PID/stat (index 0 is field 3, state), or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()


def process_tree(root: int) -> dict[int, list[str]]:
    """The root and every process below it, by pid: their /proc stat fields."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            f = proc_stat(int(entry))
            if f is not None:
                stats[int(entry)] = f
    children: dict[int, list[int]] = {}
    for pid, f in stats.items():
        children.setdefault(int(f[1]), []).append(pid)
    tree, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in stats and pid not in tree:
            tree[pid] = stats[pid]
            todo += children.get(pid, [])
    return tree


def tree_cpu_seconds(tree: dict[int, list[str]]) -> float:
    """utime+stime+cutime+cstime (fields 14-17) summed over a process tree: the live
    processes' own time plus everything their exited, waited-for children used."""
    return sum(sum(int(x) for x in f[11:15]) for f in tree.values()) / CLK_TCK


class Postfix:
    def __init__(self, args, d: Path, sink_port: int):
        self.args, self.d = args, d
        self.etc = d / "etc"
        self.smtp = free_port()
        self.master_pid: int | None = None
        self.seen: dict[int, str] = {}  # pid -> start time, every process of the instance seen
        self.etc.mkdir(parents=True)
        (d / "queue").mkdir()
        (d / "data").mkdir()
        shutil.chown(d / "data", "postfix")
        (self.etc / "main.cf").write_text(POSTFIX_MAIN.format(
            dir=d, sink=sink_port, process_limit=args.postfix_process_limit,
            dest_concurrency=args.postfix_concurrency))
        (self.etc / "master.cf").write_text(POSTFIX_MASTER.format(smtp=self.smtp))

    def cmd(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
        tool, rest = argv[0], argv[1:]
        full = [str(Path(self.args.postfix).with_name(tool)), "-c", str(self.etc), *rest]
        try:
            return subprocess.run(full, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise BenchError(f"{' '.join(full)} did not finish within {timeout}s") from e

    def start(self) -> None:
        for what in ("check", "start"):
            r = self.cmd("postfix", what)
            if r.returncode != 0:
                raise BenchError(f"postfix {what} failed ({r.returncode}): {r.stderr.strip()}\n"
                                 f"{tail(self.d / 'maillog')}")
            if r.stderr.strip():
                log(f"postfix {what}: {r.stderr.strip()}")
        on_cleanup(self.stop)
        pid_file = self.d / "queue" / "pid" / "master.pid"

        def master_pid():
            try:
                pid = int(pid_file.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                return None
            return pid if proc_stat(pid) is not None else None

        self.master_pid = wait_until("Postfix master running", master_pid, START_TIMEOUT, 0.05)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with socket_conn(self.smtp):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchError(f"Postfix smtpd not listening on {self.smtp}:\n"
                                     f"{tail(self.d / 'maillog')}")
                time.sleep(0.05)
        log(f"postfix: master pid {self.master_pid}, smtpd 127.0.0.1:{self.smtp}, config {self.etc}")

    def remember(self) -> dict[int, list[str]]:
        tree = process_tree(self.master_pid)
        for pid, f in tree.items():
            self.seen[pid] = f[19]  # field 22, start time
        return tree

    def cpu(self) -> tuple[float, int]:
        tree = self.remember()
        return tree_cpu_seconds(tree), len(tree)

    def alive(self) -> None:
        if proc_stat(self.master_pid) is None:
            raise BenchError(f"the Postfix master exited:\n{tail(self.d / 'maillog')}")

    def queue_empty(self) -> bool:
        r = self.cmd("postqueue", "-p", timeout=30)
        return r.returncode == 0 and "Mail queue is empty" in r.stdout

    def settings(self) -> str:
        return self.cmd("postconf", "-n").stdout

    def stop(self) -> None:
        """`postfix stop`, then SIGKILL to whatever of the instance is still there."""
        if self.master_pid is None:
            return
        self.remember()
        try:
            r = self.cmd("postfix", "stop", timeout=30)
            if r.returncode != 0:
                log(f"postfix stop failed ({r.returncode}): {r.stderr.strip()}")
        except BenchError as e:
            log(str(e))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(self.still(pid, st) for pid, st in self.seen.items()):
            time.sleep(0.1)
        for pid, st in self.seen.items():
            if self.still(pid, st):
                log(f"postfix process {pid} still there after postfix stop; killing it")
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        self.master_pid = None
        cleanup_done(self.stop)

    @staticmethod
    def still(pid: int, start_time: str) -> bool:
        f = proc_stat(pid)
        return f is not None and f[19] == start_time and f[0] != "Z"


def socket_conn(port: int):
    return socket.create_connection(("127.0.0.1", port), timeout=1)


def postfix_log(path: Path) -> dict:
    """Deliveries and their delays (arrival -> delivery, s) from the Postfix log."""
    sent, delays, problems = 0, [], []
    for line in path.read_text(errors="replace").splitlines():
        if "status=sent" in line:
            sent += 1
            m = re.search(r"\bdelay=([0-9.]+),", line)
            if m:
                delays.append(float(m.group(1)))
        if re.search(r"\b(warning|error|fatal|panic):", line):
            problems.append(line)
    return {"sent": sent, "delays": sorted(delays), "problems": problems}


def exact_quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def postfix_run(args, workdir: Path) -> dict:
    d = workdir / "postfix"
    d.mkdir()
    sink = start_sink(args.smtp_sink, d / "sink.log")
    pf = Postfix(args, d, sink.port)
    try:
        pf.start()
        settings = pf.settings()
        cpu0, procs0 = pf.cpu()
        r = drive(args, pf.smtp, sink, pf.alive)
        wait_until("the Postfix queue is empty", pf.queue_empty, args.settle_timeout, 0.5)
        cpu1, procs1 = pf.cpu()
        pf.stop()
        r["sink_sessions"] = sink_sessions(sink)
    finally:
        pf.stop()
        sink.close()
    lg = postfix_log(d / "maillog")
    cpu = cpu1 - cpu0
    delays = lg["delays"]
    # The same delays counted into Sluice's histogram buckets, for a like-for-like p99.
    bounds = [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, float("inf")]
    buckets = [(b, float(sum(1 for x in delays if x <= b))) for b in bounds]
    bp99 = quantile(buckets, float(len(delays)), 0.99)
    r.update({
        "postfix_version": subprocess.run([str(Path(args.postfix).with_name("postconf")), "-d", "-h",
                                           "mail_version"], capture_output=True, text=True).stdout.strip(),
        "settings": settings,
        "process_limit": args.postfix_process_limit,
        "destination_concurrency": args.postfix_concurrency,
        "cpu_s": cpu,
        "cpu_ms_per_msg": cpu * 1000 / args.messages,
        "cpu_cores_busy": cpu / r["last_delivered_s"],
        "processes_before_after": [procs0, procs1],
        "log_sent": lg["sent"],
        "delay_p50_ms": exact_quantile(delays, 0.5) * 1000,
        "delay_p99_ms": exact_quantile(delays, 0.99) * 1000,
        "delay_max_ms": (delays[-1] * 1000) if delays else float("nan"),
        "delay_mean_ms": (sum(delays) / len(delays) * 1000) if delays else float("nan"),
        "delay_p99_bucket_ms": bp99[0] * 1000,
        "log_problems": lg["problems"],
        "maillog": str(d / "maillog"),
    })
    errors = []
    if r["sink_messages"] != args.messages:
        errors.append(f"postfix: the sink received {r['sink_messages']} messages, not {args.messages}")
    if lg["sent"] != args.messages:
        errors.append(f"postfix: its log shows {lg['sent']} deliveries, not {args.messages}")
    r["errors"] = errors
    log(f"postfix: {r['e2e_msgs_per_s']:.0f} msg/s end to end, {r['cpu_ms_per_msg']:.3f} ms CPU/msg, "
        f"p99 {r['delay_p99_ms']:.0f} ms, sink sessions {r['sink_sessions']}")
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
    ap.add_argument("--messages", type=int, default=20000, help="smtp-source -m (default 20000)")
    ap.add_argument("--sessions", type=int, default=20, help="smtp-source -s (default 20)")
    ap.add_argument("--size", type=int, default=4096, help="smtp-source -l, payload bytes (default 4096)")
    ap.add_argument("--reuse", action="store_true",
                    help="smtp-source -d: several messages per connection (the issue's load opens one per message)")
    ap.add_argument("--concurrency", type=int, default=100,
                    help="Sluice delivery.concurrency for the headline run (default 100, the default)")
    ap.add_argument("--per-destination", type=int, default=20,
                    help="Sluice delivery.perDestination for the headline run (default 20, the default)")
    ap.add_argument("--variant", type=parse_variant, action="append", default=[], metavar="C/P",
                    help="also run Sluice with concurrency C and perDestination P (repeatable)")
    ap.add_argument("--postfix-process-limit", type=int, default=100,
                    help="Postfix default_process_limit (default 100, Postfix's default)")
    ap.add_argument("--postfix-concurrency", type=int, default=20,
                    help="Postfix (smtp_|default_)destination_concurrency_limit (default 20)")
    ap.add_argument("--source-timeout", type=float, default=600, help="longest smtp-source run, s")
    ap.add_argument("--deliver-timeout", type=float, default=300,
                    help="longest wait for the sink after the last message was accepted, s")
    ap.add_argument("--settle-timeout", type=float, default=60,
                    help="longest wait for an empty queue after the sink has everything, s")
    ap.add_argument("--skip-build", action="store_true", help="use the binary already built")
    ap.add_argument("--skip-ceiling", action="store_true", help="skip smtp-source -> smtp-sink")
    ap.add_argument("--skip-sluice", action="store_true", help="skip the Sluice runs")
    ap.add_argument("--skip-postfix", action="store_true", help="skip the Postfix run")
    ap.add_argument("--json", type=Path, help="also write every figure to this file as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, spools, logs)")
    ap.add_argument("--smtp-source", default=shutil.which("smtp-source") or "/usr/sbin/smtp-source")
    ap.add_argument("--smtp-sink", default=shutil.which("smtp-sink") or "/usr/sbin/smtp-sink")
    ap.add_argument("--postfix", default=shutil.which("postfix") or "/usr/sbin/postfix",
                    help="the postfix command; postqueue and postconf are taken from beside it")
    args = ap.parse_args()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    for tool in (args.smtp_source, args.smtp_sink):
        if not os.access(tool, os.X_OK):
            raise BenchError(f"{tool} not found: apt-get install postfix (its smtp-source and smtp-sink)")
    if not args.skip_postfix:
        if os.geteuid() != 0:
            raise BenchError("running a private Postfix instance needs root (or --skip-postfix)")
        if not os.access(args.postfix, os.X_OK):
            raise BenchError(f"{args.postfix} not found: apt-get install postfix, or --skip-postfix")

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
                 "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                          capture_output=True, text=True).stdout.strip(),
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
