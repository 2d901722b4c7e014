#!/usr/bin/env python3
"""Sluice filter benchmark: what the filters of issue 11 cost at acceptance, measured in
one run against the same relay without them.

    python3 bench/filter.py            # build, measure, print the summary table

What it does (see bench/README.md, "Filter benchmark", for how to read the figures):

1. `cargo build --release --bin sluice`.
2. Two prepared messages: a plain 4 KiB text message and a multipart one with a 100 KiB
   PDF-like attachment (base64), built with Python's `email` package.
3. Ceilings: smtp-source straight into smtp-sink with each load below.
4. Throughput, each on a fresh `sluice standalone` (delivery off), without filters and
   with `filters: [{attachments: {}}]` (the default rules, no scanner):
   - "4k": `smtp-source -s 20 -m 20000 -l 4096`, one connection per message;
   - "mix": two smtp-source processes at once, 10 sessions each, half the messages each,
     one sending the plain message (`-F`), the other the message with the attachment.
   msg/s from the wall clock, the relay's CPU from /proc/PID/stat.
5. Latency at the 250: real Rspamd (no Redis) and real clamd (a one-line `.hdb` EICAR
   database) on loopback, started here; a few sessions send a fixed number of messages
   (plain and attachment alternately) through a relay with no filter, the attachment
   check, Rspamd, clamd, and Rspamd and clamd together. Each message's time from
   sending the final ".\\r\\n" to reading the 250, client side; median and p99; the CPU
   of the relay, of Rspamd (its whole process tree) and of clamd over each run.

Loopback only; every wait is bounded; every child process is stopped on exit. Python
3.11 standard library only. This is a benchmark for people, never a timed test.
"""

from __future__ import annotations

import argparse
import email.policy
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

from common import (
    run_main,
    CLK_TCK, RECIPIENT, SENDER, BenchError, Relay, _on_signal, build,
    cargo_target_dir, commit, cpu_seconds, exact_quantile, free_port, histogram,
    histogram_delta, labeled, launch_relay, log, log_problems, on_cleanup, cleanup_done,
    process_tree, quantile, spawn, start_sink, stop, stop_all, tail, tree_cpu_seconds,
    verdict,
)

# Goal from the issue: with the attachment checks on, at least 80% of the figure without.
GOAL_RATIO = 0.80

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
# This benchmark measures acceptance only: queue, do not deliver (and look nothing up).
delivery:
  enabled: false
log: text
"""

POLICY = """\
apiVersion: sluice.dev/v1alpha1
kind: RelayPolicy
metadata:
  name: bench
  namespace: mail
spec:
  trustedNetworks: ["127.0.0.1/32"]
{filters}"""


def filters_yaml(checks: list[str], rspamd: int | None = None, clamd: int | None = None) -> str:
    """The policy's `filters:` section: "attachments", "rspamd", "clamav", in order."""
    items = []
    for check in checks:
        if check == "attachments":
            items.append("    - attachments: {}")
        elif check == "rspamd":
            items.append(f'    - rspamd: {{url: "http://127.0.0.1:{rspamd}"}}')
        elif check == "clamav":
            items.append(f'    - clamav: {{addresses: ["127.0.0.1:{clamd}"]}}')
        else:
            raise ValueError(check)
    return "  filters:\n" + "\n".join(items) + "\n" if items else ""


def start_relay(binary: Path, workdir: Path, name: str, filters: str) -> Relay:
    d = workdir / name
    d.mkdir()
    (d / "policy.yaml").write_text(POLICY.format(filters=filters))
    smtp, admin = free_port(), free_port()
    while admin == smtp:
        admin = free_port()
    (d / "sluice.yaml").write_text(CONFIG.format(smtp=smtp, admin=admin))
    return launch_relay(binary, d, name, smtp, admin)


# ---------------------------------------------------------------------------------------
# The messages.

def plain_message(size: int) -> bytes:
    m = EmailMessage(policy=email.policy.SMTP)
    m["From"] = f"Bench Sender <{SENDER}>"
    m["To"] = f"Recipient <{RECIPIENT}>"
    m["Subject"] = "Minutes of the Tuesday meeting"
    m["Date"] = format_datetime(datetime.now().astimezone())
    m["Message-ID"] = make_msgid(domain="sender.test")
    line = "The meeting agreed to move the review to Thursday and to keep the old schedule.\n"
    m.set_content(line * max(1, size // len(line)))
    return m.as_bytes()


def attachment_message(size: int, seed: int) -> bytes:
    """A short text and a `report.pdf` of `size` bytes: a PDF header (so that magic
    bytes say application/pdf) and random, incompressible bytes."""
    m = EmailMessage(policy=email.policy.SMTP)
    m["From"] = f"Bench Sender <{SENDER}>"
    m["To"] = f"Recipient <{RECIPIENT}>"
    m["Subject"] = "Quarterly report"
    m["Date"] = format_datetime(datetime.now().astimezone())
    m["Message-ID"] = make_msgid(domain="sender.test")
    m.set_content("Please find the quarterly report attached.\n")
    rng = random.Random(seed)
    head = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"
    pdf = head + rng.randbytes(max(0, size - len(head) - 6)) + b"%%EOF\n"
    m.add_attachment(pdf, maintype="application", subtype="pdf", filename="report.pdf")
    return m.as_bytes()


def write_messages(args, d: Path) -> dict[str, Path]:
    """The two messages as files with LF line ends: smtp-source -F sends each line with
    CRLF (and stuffs dots); a CR of the file would become a bare CR."""
    d.mkdir()
    files = {"plain": d / "plain.eml", "attachment": d / "attachment.eml"}
    files["plain"].write_bytes(plain_message(args.size).replace(b"\r\n", b"\n"))
    attachment = attachment_message(args.attachment_size, seed=11)
    files["attachment"].write_bytes(attachment.replace(b"\r\n", b"\n"))
    for kind, path in files.items():
        log(f"message {kind}: {path} ({path.stat().st_size} bytes)")
    return files


# ---------------------------------------------------------------------------------------
# Throughput: one or more smtp-source processes at once.

@dataclass
class Load:
    name: str
    messages: int
    # smtp-source argument lists, each without the target address.
    commands: list[list[str]] = field(default_factory=list)


def loads(args, files: dict[str, Path]) -> list[Load]:
    base = ["-f", SENDER, "-t", RECIPIENT, "-M", "source.bench.test"]
    four_k = Load("4k", args.messages, [[args.smtp_source, "-s", str(args.sessions), "-m",
                                         str(args.messages), "-l", str(args.size), *base]])
    half_s, half_m = args.sessions // 2, args.mix_messages // 2
    if half_s < 1 or half_m < 1:
        raise BenchError("--sessions and --mix-messages must be at least 2")
    mix = Load("mix", 2 * half_m, [
        [args.smtp_source, "-s", str(half_s), "-m", str(half_m), "-F", str(files["plain"]), *base],
        [args.smtp_source, "-s", str(half_s), "-m", str(half_m), "-F", str(files["attachment"]), *base],
    ])
    return [four_k, mix]


def run_sources(load: Load, port: int, workdir: Path, tag: str, timeout: float) -> dict:
    """Runs the load's smtp-source processes together at 127.0.0.1:PORT; wall clock from
    the first start to the last exit."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    procs, errs = [], []
    log(f"{tag}: {len(load.commands)} smtp-source, load average {os.getloadavg()[0]:.2f}")
    started = time.monotonic()
    for i, cmd in enumerate(load.commands):
        err = workdir / f"{tag}-source{i + 1}.err"
        errs.append(err)
        full = cmd + [f"127.0.0.1:{port}"]
        with open(err, "wb") as f:
            procs.append(spawn(full, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=f))
    ends: list[float | None] = [None] * len(procs)
    while any(e is None for e in ends):
        now = time.monotonic()
        for i, p in enumerate(procs):
            if ends[i] is None and p.poll() is not None:
                ends[i] = now - started
                stop(p)  # reaped already; only forgets it
                if p.returncode != 0:
                    raise BenchError(f"{tag}: smtp-source exited with {p.returncode}: "
                                     f"{errs[i].read_text(errors='replace').strip()[-2000:]}")
        if now - started > timeout:
            raise BenchError(f"{tag}: smtp-source did not finish within {timeout}s")
        time.sleep(0.01)
    wall = max(ends)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "wall_s": wall,
        "each_s": ends,
        "msgs_per_s": load.messages / wall,
        "client_cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "source_stderr": "\n".join(e.read_text(errors="replace").strip() for e in errs).strip(),
    }


def ceiling(args, load: Load, workdir: Path) -> dict:
    sink = start_sink(args.smtp_sink, workdir / f"ceiling-{load.name}-sink.log", counters=False)
    try:
        r = run_sources(load, sink.port, workdir, f"ceiling-{load.name}", args.source_timeout)
    finally:
        sink.close()
    log(f"ceiling {load.name}: {r['msgs_per_s']:.0f} msg/s")
    return r


def throughput(args, binary: Path, workdir: Path, load: Load, checks: list[str], round_no: int) -> dict:
    name = f"{load.name}-{'+'.join(checks) or 'none'}-r{round_no + 1}"
    relay = start_relay(binary, workdir, name, filters_yaml(checks))
    try:
        m0, cpu0 = relay.metrics(), cpu_seconds(relay.pid)
        run = run_sources(load, relay.smtp, workdir, name, args.source_timeout)
        cpu1, m1 = cpu_seconds(relay.pid), relay.metrics()
    finally:
        relay.shutdown()
    cpu = cpu1 - cpu0
    accepted = m1.get("sluice_messages_accepted_total", 0) - m0.get("sluice_messages_accepted_total", 0)
    r = dict(run)
    r.update({
        "load": load.name,
        "checks": checks,
        "messages": load.messages,
        "accepted": accepted,
        "relay_cpu_s": cpu,
        "cpu_ms_per_msg": cpu * 1000 / load.messages,
        "cpu_cores_busy": cpu / run["wall_s"],
        "verdicts": verdicts(m1, m0),
        "rejected": labeled(m1, "sluice_messages_rejected_total"),
        "filter_seconds": filter_seconds(m1, m0),
        "relay_exit_code": relay.exit_code,
        "relay_log_problems": log_problems(relay.log_path),
        "relay_log": str(relay.log_path),
    })
    r["errors"] = relay_errors(name, r, load.messages, checks)
    if not r["errors"] and not args.keep:
        shutil.rmtree(relay.dir / "spool", ignore_errors=True)  # the mix leaves 270 MiB
    log(f"{name}: {r['msgs_per_s']:.0f} msg/s, {r['cpu_ms_per_msg']:.3f} ms CPU/msg")
    return r


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def rounds(runs: list[dict]) -> dict:
    """Several rounds of one load and one set of checks: the median of each figure, and
    every round as measured."""
    means = [r["filter_seconds"]["mean_ms"] for r in runs if r["filter_seconds"].get("count")]
    return {
        "msgs_per_s": median([r["msgs_per_s"] for r in runs]),
        "cpu_ms_per_msg": median([r["cpu_ms_per_msg"] for r in runs]),
        "cpu_cores_busy": median([r["cpu_cores_busy"] for r in runs]),
        "filter_seconds": {"count": len(means), "mean_ms": median(means)} if means else {"count": 0},
        "relay_log_problems": [line for r in runs for line in r["relay_log_problems"]],
        "rounds": runs,
    }


def verdicts(m1: dict, m0: dict) -> dict[str, float]:
    prefix = "sluice_filter_verdicts_total{"
    return {k[len(prefix) - 1:]: v - m0.get(k, 0) for k, v in m1.items()
            if k.startswith(prefix) and v - m0.get(k, 0)}


def filter_seconds(m1: dict, m0: dict) -> dict:
    """The relay's own sluice_filter_seconds over the run: count, mean, p50/p99 buckets."""
    try:
        buckets, count, total = histogram_delta(histogram(m1, "sluice_filter_seconds"),
                                                histogram(m0, "sluice_filter_seconds"))
    except BenchError:
        return {"count": 0}
    if not count:
        return {"count": 0}
    return {
        "count": count,
        "mean_ms": total / count * 1000,
        "p50_bucket_ms": quantile(buckets, count, 0.5)[0] * 1000,
        "p99_bucket_ms": quantile(buckets, count, 0.99)[0] * 1000,
    }


def relay_errors(name: str, r: dict, sent: int, checks: list[str]) -> list[str]:
    """What makes a run invalid: not every message accepted, a refusal, a check that did
    not accept every message, a relay that did not stop cleanly."""
    errors = []
    if r["accepted"] != sent:
        errors.append(f"{name}: the relay accepted {r['accepted']:.0f} messages, not {sent}")
    if r["rejected"]:
        errors.append(f"{name}: rejections {r['rejected']}")
    for key, n in r["verdicts"].items():
        if 'result="accept"' not in key:
            errors.append(f"{name}: {n:.0f} verdicts {key}")
    for check in checks:
        kind = {"attachments": "attachments", "rspamd": "rspamd", "clamav": "clamav"}[check]
        n = sum(v for k, v in r["verdicts"].items() if f'check="{kind}"' in k and 'result="accept"' in k)
        if n != sent:
            errors.append(f"{name}: {check} accepted {n:.0f} of {sent} messages")
    if r["relay_exit_code"] not in (0, None):
        errors.append(f"{name}: the relay exited with {r['relay_exit_code']}")
    return errors


# ---------------------------------------------------------------------------------------
# The scanners, started here as on a test machine: loopback, no network, no Redis.

RSPAMD_CONF = """\
.include "$CONFDIR/common.conf"
options {{
  pidfile = "$RUNDIR/rspamd.pid";
  .include "$CONFDIR/options.inc"
  dns {{ nameserver = ["127.0.0.1:{dead_dns}"]; timeout = 0.2s; retransmits = 1; }}
}}
logging {{ type = "file"; filename = "$LOGDIR/rspamd.log"; level = "warning"; }}
worker "normal" {{
  bind_socket = "127.0.0.1:{port}";
  .include "$CONFDIR/worker-normal.inc"
  count = {workers};
}}
"""

# The one signature clamd gets: the EICAR test file by MD5 and size. No official
# database is downloaded, so clamd's scan here costs less than with ClamAV's millions.
EICAR_HDB = "44d88612fea8a8f36de82e1278abb02f:68:Sluice-Bench-EICAR\n"


@dataclass
class Scanner:
    name: str
    proc: subprocess.Popen
    port: int
    dir: Path
    log_path: Path
    startup_s: float

    def cpu(self) -> float:
        """CPU seconds of the daemon and every process under it (Rspamd's workers),
        reaped children included."""
        return tree_cpu_seconds(process_tree(self.proc.pid))

    def alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"{self.name} exited with {self.proc.returncode}:\n{tail(self.log_path)}")

    def shutdown(self) -> None:
        """SIGTERM to its process group (the daemon and its workers), bounded; then
        SIGKILL to whatever of the group is left."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except (OSError, subprocess.TimeoutExpired):
                log(f"{self.name} (pid {self.proc.pid}) did not stop in 15s; killing its group")
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass  # the group is gone already
        stop(self.proc, signal.SIGKILL, timeout=10)
        cleanup_done(self.shutdown)


def start_rspamd(args, workdir: Path) -> Scanner:
    d = workdir / "rspamd"
    d.mkdir()
    d.chmod(0o777)  # as root, the workers run as nobody and write here
    port = free_port()
    (d / "rspamd.conf").write_text(RSPAMD_CONF.format(dead_dns=free_port(), port=port,
                                                      workers=args.rspamd_workers))
    (d / "local.d").mkdir()
    cmd = [args.rspamd, "-f", "-c", str(d / "rspamd.conf"), "--var=CONFDIR=/etc/rspamd"]
    cmd += [f"--var={var}={d}" for var in ("LOCAL_CONFDIR", "DBDIR", "RUNDIR", "LOGDIR")]
    if os.geteuid() == 0:
        cmd += ["-u", "nobody", "-g", "nogroup"]
    log(" ".join(cmd))
    started = time.monotonic()
    with open(d / "stdout.log", "wb") as out:
        proc = spawn(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
    scanner = Scanner("rspamd", proc, port, d, d / "rspamd.log", 0.0)
    on_cleanup(scanner.shutdown)

    def pongs() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                return b"pong" in r.read()
        except OSError:
            return False

    wait_scanner(scanner, pongs, args.scanner_start_timeout)
    scanner.startup_s = time.monotonic() - started
    log(f"rspamd: pid {proc.pid}, 127.0.0.1:{port}, ready after {scanner.startup_s:.1f}s")
    return scanner


def start_clamd(args, workdir: Path) -> Scanner:
    d = workdir / "clamd"
    (d / "db").mkdir(parents=True)
    (d / "db" / "sluice-bench.hdb").write_text(EICAR_HDB)
    port = free_port()
    (d / "clamd.conf").write_text(
        f"Foreground yes\nTCPAddr 127.0.0.1\nTCPSocket {port}\nDatabaseDirectory {d / 'db'}\n"
        f"LogFile {d / 'clamd.log'}\nStreamMaxLength 100M\n")
    cmd = [args.clamd, "-c", str(d / "clamd.conf")]
    log(" ".join(cmd))
    started = time.monotonic()
    with open(d / "stdout.log", "wb") as out:
        proc = spawn(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
    scanner = Scanner("clamd", proc, port, d, d / "clamd.log", 0.0)
    on_cleanup(scanner.shutdown)

    def pongs() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"zPING\0")
                return s.recv(16).startswith(b"PONG")
        except OSError:
            return False

    wait_scanner(scanner, pongs, args.scanner_start_timeout)
    scanner.startup_s = time.monotonic() - started
    log(f"clamd: pid {proc.pid}, 127.0.0.1:{port}, ready after {scanner.startup_s:.1f}s")
    return scanner


def wait_scanner(scanner: Scanner, pongs, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pongs():
        scanner.alive()
        if time.monotonic() > deadline:
            raise BenchError(f"{scanner.name} did not answer within {timeout}s:\n{tail(scanner.log_path)}")
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------
# Latency: a small SMTP client that times each end of DATA.

class SmtpClient:
    """One SMTP session over a plain socket, every read bounded by the socket timeout."""

    def __init__(self, port: int, timeout: float):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        # The final ".\r\n" is a write of its own: without this, Nagle holds it until
        # the body is acknowledged, and the delayed ACK adds 40 ms to the measurement.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        self.expect(220)
        self.command(b"EHLO latency.bench.test", 250)

    def reply(self) -> tuple[int, bytes]:
        lines = []
        while True:
            line = self.file.readline(4096)
            if not line:
                raise BenchError(f"the relay closed the session (after {lines!r})")
            lines.append(line)
            if line[3:4] != b"-":
                return int(line[:3]), b"".join(lines)

    def expect(self, code: int) -> None:
        got, text = self.reply()
        if got != code:
            raise BenchError(f"expected {code}, got {text!r}")

    def command(self, line: bytes, code: int) -> None:
        self.sock.sendall(line + b"\r\n")
        self.expect(code)

    def send(self, stuffed: bytes) -> tuple[float, int, bytes]:
        """One message (dot-stuffed, ending in CRLF): seconds from sending the final
        ".\\r\\n" to reading the reply, and the reply."""
        self.command(f"MAIL FROM:<{SENDER}>".encode(), 250)
        self.command(f"RCPT TO:<{RECIPIENT}>".encode(), 250)
        self.command(b"DATA", 354)
        self.sock.sendall(stuffed)
        started = time.perf_counter()
        self.sock.sendall(b".\r\n")
        code, text = self.reply()
        return time.perf_counter() - started, code, text

    def close(self) -> None:
        try:
            self.sock.sendall(b"QUIT\r\n")
            self.reply()
        except (OSError, BenchError):
            pass
        self.file.close()
        self.sock.close()


def stuff(message: bytes) -> bytes:
    lines = message.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n" for l in lines)


def send_timed(port: int, messages: list[tuple[str, bytes]], count: int, sessions: int,
               timeout: float) -> list[tuple[str, float, int]]:
    """`count` messages over `sessions` parallel sessions, the messages taken in turn
    (plain, attachment, plain...): (kind, seconds to the reply, reply code) each."""
    results: list[tuple[str, float, int]] = []
    failures: list[str] = []
    lock = threading.Lock()
    next_index = [0]

    def worker():
        client = None
        try:
            client = SmtpClient(port, timeout)
            while True:
                with lock:
                    i = next_index[0]
                    if i >= count or failures:
                        return
                    next_index[0] += 1
                kind, data = messages[i % len(messages)]
                seconds, code, text = client.send(data)
                with lock:
                    results.append((kind, seconds, code))
                if code != 250:
                    raise BenchError(f"message {i} ({kind}) answered {text!r}")
        except (OSError, BenchError) as e:
            with lock:
                failures.append(repr(e))
        finally:
            if client is not None:
                client.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(sessions)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout * max(1, count)
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            raise BenchError("a latency session did not finish in time")
    if failures:
        raise BenchError(f"latency run failed: {failures[0]}")
    return results


def latency(args, binary: Path, workdir: Path, name: str, checks: list[str],
            messages: list[tuple[str, bytes]], scanners: list[Scanner],
            rspamd: Scanner | None, clamd: Scanner | None) -> dict:
    filters = filters_yaml(checks, rspamd.port if rspamd else None, clamd.port if clamd else None)
    relay = start_relay(binary, workdir, f"latency-{name}", filters)
    try:
        # Warm-up, not counted: first connections, Rspamd's first tasks, page cache.
        send_timed(relay.smtp, messages, args.warmup, args.latency_sessions, args.reply_timeout)
        m0, cpu0 = relay.metrics(), cpu_seconds(relay.pid)
        s0 = {s.name: s.cpu() for s in scanners}
        t0 = time.monotonic()
        times = send_timed(relay.smtp, messages, args.latency_messages, args.latency_sessions,
                           args.reply_timeout)
        wall = time.monotonic() - t0
        cpu1, m1 = cpu_seconds(relay.pid), relay.metrics()
        s1 = {s.name: s.cpu() for s in scanners}
        for s in scanners:
            s.alive()
    finally:
        relay.shutdown()
    n = args.latency_messages
    total = args.warmup + n
    relay_cpu = cpu1 - cpu0
    scanner_cpu = {k: s1[k] - s0[k] for k in s0}
    used = {"rspamd": "rspamd" in checks, "clamd": "clamav" in checks}
    busy = relay_cpu + sum(v for k, v in scanner_cpu.items() if used.get(k))
    r = {
        "checks": checks,
        "messages": n,
        "sessions": args.latency_sessions,
        "wall_s": wall,
        "msgs_per_s": n / wall,
        "relay_cpu_ms_per_msg": relay_cpu * 1000 / n,
        "scanner_cpu_ms_per_msg": {k: v * 1000 / n for k, v in scanner_cpu.items()},
        "scanner_share": {k: (v / busy if busy else float("nan"))
                          for k, v in scanner_cpu.items() if used.get(k)},
        "verdicts": verdicts(m1, m0),
        "rejected": labeled(m1, "sluice_messages_rejected_total"),
        "filter_seconds": filter_seconds(m1, m0),
        "relay_exit_code": relay.exit_code,
        "relay_log_problems": log_problems(relay.log_path),
        "relay_log": str(relay.log_path),
    }
    for kind in ("all", "plain", "attachment"):
        xs = sorted(s for k, s, _ in times if kind in ("all", k))
        r[kind] = {"count": len(xs), "p50_ms": exact_quantile(xs, 0.5) * 1000,
                   "p99_ms": exact_quantile(xs, 0.99) * 1000,
                   "max_ms": xs[-1] * 1000 if xs else float("nan"),
                   "mean_ms": sum(xs) / len(xs) * 1000 if xs else float("nan")}
    r["accepted"] = m1.get("sluice_messages_accepted_total", 0) - m0.get("sluice_messages_accepted_total", 0)
    r["errors"] = relay_errors(f"latency-{name}", r, n, checks)
    log(f"latency {name}: p50 {r['all']['p50_ms']:.2f} ms, p99 {r['all']['p99_ms']:.2f} ms "
        f"({total} messages, {args.warmup} of them warm-up)")
    return r


# ---------------------------------------------------------------------------------------
# Summary.

def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    w = [max(len(r[k]) for r in rows + [header]) for k in range(len(header))]
    out = ["  ".join(f"{c:<{w[k]}}" for k, c in enumerate(header)).rstrip(), "-" * (sum(w) + 2 * len(w))]
    out += ["  ".join(f"{c:<{w[k]}}" for k, c in enumerate(r)).rstrip() for r in rows]
    return "\n".join(out)


def summary(res: dict) -> tuple[str, bool]:
    parts, goals_ok = [], True
    t = res.get("throughput", {})
    if t:
        rows = []
        for load in ("4k", "mix"):
            c = res.get("ceiling", {}).get(load)
            if c:
                rows.append((load, "ceiling (smtp-sink)", f"{c['msgs_per_s']:.0f}", "", "", "", ""))
            none, att = t.get(f"{load}-none"), t.get(f"{load}-attachments")
            for label, r in (("no filters", none), ("attachments", att)):
                if r:
                    rows.append((load, label, f"{r['msgs_per_s']:.0f}", f"{r['cpu_ms_per_msg']:.3f}",
                                 f"{r['cpu_cores_busy']:.2f}",
                                 f"{r['filter_seconds'].get('mean_ms', float('nan')):.3f}"
                                 if r["filter_seconds"].get("count") else "",
                                 " ".join(f"{x['msgs_per_s']:.0f}/{x['cpu_ms_per_msg']:.3f}"
                                          for x in r["rounds"])))
            if none and att:
                rate = att["msgs_per_s"] / none["msgs_per_s"]
                cpu = none["cpu_ms_per_msg"] / att["cpu_ms_per_msg"]
                ok = rate >= GOAL_RATIO and cpu >= GOAL_RATIO
                goals_ok &= ok
                rows.append((load, "attachments / none", f"{rate:.0%}", f"{cpu:.0%} (+{1 / cpu - 1:.0%})",
                             "", f">= {GOAL_RATIO:.0%}: {verdict(ok)}", ""))
        parts.append("Acceptance throughput (msg/s from the wall clock; CPU = the relay's, /proc; "
                     "medians of the rounds)\n" + table(
                         rows, ("load", "run", "msg/s", "CPU ms/msg", "cores", "filter mean ms",
                                "rounds msg/s / CPU ms")))
    lat = res.get("latency", {})
    if lat:
        rows = []
        base = lat.get("none")
        for name, r in lat.items():
            added = ""
            if base and name != "none":
                added = f"+{r['all']['p50_ms'] - base['all']['p50_ms']:.2f} / +{r['all']['p99_ms'] - base['all']['p99_ms']:.2f}"
            cpu = [f"relay {r['relay_cpu_ms_per_msg']:.2f}"]
            for k, v in r["scanner_cpu_ms_per_msg"].items():
                if k in r["scanner_share"]:
                    cpu.append(f"{k} {v:.2f} ({r['scanner_share'][k]:.0%})")
            rows.append((name, f"{r['all']['p50_ms']:.2f} / {r['all']['p99_ms']:.2f}",
                         f"{r['plain']['p50_ms']:.2f} / {r['plain']['p99_ms']:.2f}",
                         f"{r['attachment']['p50_ms']:.2f} / {r['attachment']['p99_ms']:.2f}",
                         added, ", ".join(cpu)))
        any_r = next(iter(lat.values()))
        parts.append(f"Latency end of DATA -> 250, client side, ms ({any_r['messages']} messages over "
                     f"{any_r['sessions']} sessions, plain and attachment in turn)\n" + table(
                         rows, ("filters", "all p50 / p99", "plain p50 / p99", "attachment p50 / p99",
                                "added p50 / p99", "CPU ms/msg (share of relay+scanners)")))
    return "\n\n".join(parts), goals_ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=20000, help="the 4k load: smtp-source -m (default 20000)")
    ap.add_argument("--sessions", type=int, default=20, help="smtp-source -s, shared by the mix's two (default 20)")
    ap.add_argument("--size", type=int, default=4096, help="the 4k load's -l and the plain message's size (default 4096)")
    ap.add_argument("--mix-messages", type=int, default=6000,
                    help="messages of the mix, half with the attachment (default 6000: 410 MiB to a spool)")
    ap.add_argument("--attachment-size", type=int, default=100 * 1024, help="attachment bytes before base64 (default 102400)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="throughput runs per load with and without the check, alternating; medians (default 3)")
    ap.add_argument("--latency-messages", type=int, default=500, help="timed messages per latency run (default 500)")
    ap.add_argument("--latency-sessions", type=int, default=2, help="parallel sessions of a latency run (default 2)")
    ap.add_argument("--warmup", type=int, default=20, help="untimed messages before each latency run (default 20)")
    ap.add_argument("--rspamd-workers", type=int, default=1, help="Rspamd normal workers (default 1)")
    ap.add_argument("--reply-timeout", type=float, default=60, help="longest wait for one SMTP reply, s")
    ap.add_argument("--scanner-start-timeout", type=float, default=180, help="longest wait for Rspamd or clamd to answer, s")
    ap.add_argument("--source-timeout", type=float, default=600, help="longest smtp-source run, s")
    ap.add_argument("--skip-build", action="store_true", help="use the binary already built")
    ap.add_argument("--skip-throughput", action="store_true", help="skip the ceilings and throughput runs")
    ap.add_argument("--skip-latency", action="store_true", help="skip the scanners and latency runs")
    ap.add_argument("--json", type=Path, help="also write every figure to this file as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, spools, logs)")
    ap.add_argument("--check", action="store_true", help="exit 3 when a goal is missed")
    ap.add_argument("--smtp-source", default=shutil.which("smtp-source") or "/usr/sbin/smtp-source")
    ap.add_argument("--smtp-sink", default=shutil.which("smtp-sink") or "/usr/sbin/smtp-sink")
    ap.add_argument("--rspamd", default=shutil.which("rspamd") or "/usr/bin/rspamd")
    ap.add_argument("--clamd", default=shutil.which("clamd") or "/usr/sbin/clamd")
    args = ap.parse_args()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    tools = []
    if not args.skip_throughput:
        tools += [(args.smtp_source, "postfix"), (args.smtp_sink, "postfix")]
    if not args.skip_latency:
        tools += [(args.rspamd, "rspamd"), (args.clamd, "clamav-daemon")]
    for tool, package in tools:
        if not os.access(tool, os.X_OK):
            raise BenchError(f"{tool} not found: apt-get install {package}")

    if not args.skip_build:
        build("--bin", "sluice")
    binary = cargo_target_dir() / "release" / "sluice"
    if not binary.exists():
        raise BenchError(f"{binary} not built (run without --skip-build)")

    workdir = Path(tempfile.mkdtemp(prefix="sluice-filter-bench-"))
    log(f"work directory {workdir} (messages, spools, logs)")
    res: dict = {"machine": {"cpus": os.cpu_count(), "clk_tck": CLK_TCK, "kernel": os.uname().release,
                             "loadavg_at_start": os.getloadavg()},
                 "commit": commit()}
    errors: list[str] = []
    completed = False
    try:
        files = write_messages(args, workdir / "messages")
        res["messages"] = {k: {"path": str(p), "bytes": p.stat().st_size} for k, p in files.items()}
        if not args.skip_throughput:
            res["ceiling"], res["throughput"] = {}, {}
            for load in loads(args, files):
                res["ceiling"][load.name] = ceiling(args, load, workdir)
                runs: dict[str, list[dict]] = {"none": [], "attachments": []}
                for i in range(args.rounds):
                    # Alternate which goes first, so that a drift of the machine's load
                    # weighs on both alike.
                    for key in (("none", "attachments") if i % 2 == 0 else ("attachments", "none")):
                        checks = [] if key == "none" else ["attachments"]
                        r = throughput(args, binary, workdir, load, checks, i)
                        runs[key].append(r)
                        errors += r["errors"]
                for key, rs in runs.items():
                    res["throughput"][f"{load.name}-{key}"] = rounds(rs)
        if not args.skip_latency:
            messages = [(k, stuff(p.read_bytes())) for k, p in files.items()]
            rspamd, clamd = start_rspamd(args, workdir), start_clamd(args, workdir)
            res["scanners"] = {s.name: {"startup_s": s.startup_s, "pid": s.proc.pid}
                               for s in (rspamd, clamd)}
            res["latency"] = {}
            for name, checks in (("none", []), ("attachments", ["attachments"]), ("rspamd", ["rspamd"]),
                                 ("clamd", ["clamav"]), ("rspamd+clamd", ["rspamd", "clamav"])):
                r = latency(args, binary, workdir, name, checks, messages, [rspamd, clamd], rspamd, clamd)
                res["latency"][name] = r
                errors += r["errors"]
            for s in (rspamd, clamd):
                res["scanners"][s.name]["log_tail"] = tail(s.log_path, 10)
                s.shutdown()
        completed = True
    finally:
        stop_all()
        if not completed:
            log(f"configs, spools and logs kept in {workdir}")
        elif not args.keep and not errors:
            shutil.rmtree(workdir, ignore_errors=True)

    text, goals_ok = summary(res)
    res["machine"]["loadavg_at_end"] = os.getloadavg()
    load = res["machine"]["loadavg_at_start"]
    print()
    print(f"Sluice filter benchmark, commit {res['commit']}, {res['machine']['cpus']} CPUs, "
          f"load average {load[0]:.2f} at start, {res['machine']['loadavg_at_end'][0]:.2f} at end")
    if load[0] > 0.5 * (os.cpu_count() or 1):
        print("(the machine was busy with other work at the start: figures may be low; run again when idle)")
    print(text)
    all_runs = list(res.get("throughput", {}).items()) + [(f"latency-{k}", v) for k, v in res.get("latency", {}).items()]
    noisy = [(name, r["relay_log_problems"]) for name, r in all_runs if r["relay_log_problems"]]
    print("\nrelay logs: " + ("no WARN/ERROR lines" if not noisy else ""))
    for name, lines in noisy:
        print(f"  {name}: {len(lines)} WARN/ERROR lines, first: {lines[0]}")
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
