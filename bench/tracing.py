#!/usr/bin/env python3
"""The cost of trace export: relay CPU per accepted and per delivered message for a
baseline binary (before OpenTelemetry), the new binary with export off, and the new
binary exporting every span (sampling 1.0) to an OTLP/HTTP receiver in this script.

    python3 bench/tracing.py --baseline /path/to/old/sluice
    python3 bench/tracing.py --baseline OLD --mode both --rounds 3 --messages 5000

What it does (see bench/README.md for how to read the figures):

1. `cargo build --release --bin sluice` (unless --skip-build).
2. A minimal OTLP receiver on loopback (`POST /v1/traces`, protobuf): it answers 200,
   counts requests, bytes and spans (a few lines of protobuf wire format), and keeps
   nothing.
3. For each round, each variant in turn (baseline, off, on), on a fresh sink and spool:
   - standalone: `sluice standalone` with a route of every domain to smtp-sink;
     smtp-source sends the load; CPU of the one process per message (it both accepts
     and delivers);
   - roles (--mode roles/both): nats-server, `sluice policy push`, `sluice ingress` and
     `sluice worker`; the ingress's CPU per accepted message and the worker's per
     delivered message.
   With export on, the CPU is read once the receiver has every span the messages make
   (or a bounded wait ran out: then the figure is marked), so the export work is inside
   the measurement and not left to the exit flush.
4. The median of the rounds per variant, and each variant against the baseline.

Loopback only; every wait is bounded; every process started is stopped on exit and on
Ctrl-C. Python 3.11 standard library only. A benchmark for people, never a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from common import (
    run_main,
    CLK_TCK, POLICY, BenchError, _on_signal, add_load_args, add_tool_args, add_wait_args,
    build, cargo_target_dir, check_tools, commit, cpu_seconds, drive, free_port, launch_role,
    log, log_problems, queue_len, sluice_config, start_nats, start_sink, stop_all, tail,
    wait_until,
)

# Spans one message makes with export on, standalone or ingress + worker: the session,
# the acceptance, its checks and its enqueue (ingress); one attempt with its connect and
# its transaction (worker). A route to an IP address looks nothing up.
SPANS_PER_MESSAGE = 7
# The receiver should have every span within this after the last delivery.
SPANS_WITHIN = 30.0

VARIANTS = ("baseline", "off", "on")


# ---------------------------------------------------------------------------------------
# The OTLP receiver.

def varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def fields(buf: bytes):
    """(field number, bytes) of the length-delimited fields of one protobuf message;
    other wire types are skipped."""
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, i = varint(buf, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            n, i = varint(buf, i)
            yield number, buf[i:i + n]
            i += n
        else:
            raise ValueError(f"wire type {wire}")


def count_spans(body: bytes) -> int:
    """ExportTraceServiceRequest.resource_spans(1) -> ResourceSpans.scope_spans(2) ->
    ScopeSpans.spans(2)."""
    n = 0
    for f1, resource_spans in fields(body):
        if f1 != 1:
            continue
        for f2, scope_spans in fields(resource_spans):
            if f2 != 2:
                continue
            n += sum(1 for f3, _ in fields(scope_spans) if f3 == 2)
    return n


class Receiver:
    """OTLP/HTTP traces on 127.0.0.1: counts and discards."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = self.spans = self.bytes = self.bad = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the exporter's client pools

            def do_POST(self):  # noqa: N802 (the http.server name)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                try:
                    spans = count_spans(body) if self.path == "/v1/traces" else None
                except ValueError:
                    spans = None
                with receiver.lock:
                    receiver.requests += 1
                    receiver.bytes += length
                    if spans is None:
                        receiver.bad += 1
                    else:
                        receiver.spans += spans
                self.send_response(200 if spans is not None else 400)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def counts(self) -> dict:
        with self.lock:
            return {"requests": self.requests, "spans": self.spans, "bytes": self.bytes,
                    "bad": self.bad}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------------------
# One measurement.

def export_env(variant: str, receiver: Receiver) -> dict[str, str]:
    if variant != "on":
        # Nothing of OTEL_* from the caller's environment may turn export on.
        return {}
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "1.0",
        # Export every half second, and queue enough that no span is dropped at full
        # load (the default 2048 would drop, and so hide part of the cost).
        "OTEL_BSP_SCHEDULE_DELAY": "500",
        "OTEL_BSP_MAX_QUEUE_SIZE": "131072",
    }


def clean_environment() -> None:
    for key in [k for k in os.environ if k.startswith("OTEL_")]:
        del os.environ[key]


def policy_push(binary: Path, d: Path, url: str) -> None:
    cmd = [str(binary), "policy", "push", "--config", str(d / "sluice.yaml"), "--nats-url", url]
    r = subprocess.run(cmd, cwd=d, capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, NO_COLOR="1"))
    if r.returncode != 0:
        raise BenchError(f"sluice policy push exited with {r.returncode}: {(r.stdout + r.stderr).strip()}")


def measure(args, binary: Path, workdir: Path, mode: str, variant: str, rnd: int,
            receiver: Receiver) -> dict:
    name = f"{mode}-{variant}-r{rnd}"
    d = workdir / name
    d.mkdir()
    sink = start_sink(args.smtp_sink, d / "sink.log")
    (d / "policy.yaml").write_text(POLICY.format(sink=sink.port))
    (d / "sluice.yaml").write_text(sluice_config(args.concurrency, 20, dns=free_port()))
    cfg = ["--config", str(d / "sluice.yaml")]
    env = export_env(variant, receiver)
    procs = []
    nats = None
    try:
        if mode == "standalone":
            relay = launch_role(binary, d, "standalone", ["standalone", *cfg], smtp=True, env=env)
            procs = [relay]
            ingress, worker = relay, relay
        else:
            nats = start_nats(args.nats_server, d)
            policy_push(binary, d, nats.url)
            flags = [*cfg, "--nats-url", nats.url]
            worker = launch_role(binary, d, "worker", ["worker", *flags], smtp=False, env=env)
            ingress = launch_role(binary, d, "ingress", ["ingress", *flags], smtp=True, env=env)
            procs = [worker, ingress]

        def alive():
            for p in procs:
                if p.proc.poll() is not None:
                    raise BenchError(f"{p.name} exited with {p.proc.returncode}:\n{tail(p.log_path)}")

        sent = 'sluice_deliveries_total{route="smarthost",status="sent"}'
        m0 = worker.metrics()
        spans0 = receiver.counts()
        cpu0 = {p.name: cpu_seconds(p.pid) for p in procs}
        r = drive(args, ingress.smtp, sink, alive)
        wait_until("all deliveries counted as sent",
                   lambda: worker.metrics().get(sent, 0) - m0.get(sent, 0) >= args.messages,
                   args.settle_timeout)
        wait_until("the queue is empty", lambda: queue_len(worker.admin) == 0, args.settle_timeout)
        complete = True
        if variant == "on":
            want = spans0["spans"] + SPANS_PER_MESSAGE * args.messages
            deadline = time.monotonic() + SPANS_WITHIN
            while receiver.counts()["spans"] < want and time.monotonic() < deadline:
                alive()
                time.sleep(0.1)
            complete = receiver.counts()["spans"] >= want
        cpu1 = {p.name: cpu_seconds(p.pid) for p in procs}
        spans1 = receiver.counts()
    finally:
        for p in procs:
            p.shutdown()
        if nats:
            nats.shutdown()
        sink.close()
    cpu = {k: cpu1[k] - cpu0[k] for k in cpu1}
    out = {
        "mode": mode, "variant": variant, "round": rnd,
        "accept_msgs_per_s": r["accept_msgs_per_s"], "e2e_msgs_per_s": r["e2e_msgs_per_s"],
        "sink_messages": r["sink_messages"], "cpu_s": cpu,
        "spans": spans1["spans"] - spans0["spans"], "export_requests": spans1["requests"] - spans0["requests"],
        "export_bytes": spans1["bytes"] - spans0["bytes"], "spans_complete": complete,
        "log_problems": [line for p in procs for line in log_problems(p.log_path)],
        "loadavg": os.getloadavg()[0],
    }
    if mode == "standalone":
        out["cpu_ms_per_msg"] = cpu["standalone"] * 1000 / args.messages
    else:
        out["ingress_cpu_ms_per_accepted"] = cpu["ingress"] * 1000 / args.messages
        out["worker_cpu_ms_per_delivered"] = cpu["worker"] * 1000 / args.messages
    if r["sink_messages"] != args.messages:
        raise BenchError(f"{name}: the sink received {r['sink_messages']} messages, not {args.messages}")
    figures = {k: round(v, 4) for k, v in out.items() if "cpu_ms" in k}
    log(f"{name}: {figures}, spans {out['spans']}, load {out['loadavg']:.2f}")
    return out


# ---------------------------------------------------------------------------------------
# Summary.

METRICS = {
    "standalone": [("cpu_ms_per_msg", "CPU ms per message (accepted and delivered, one process)")],
    "roles": [("ingress_cpu_ms_per_accepted", "ingress CPU ms per accepted message"),
              ("worker_cpu_ms_per_delivered", "worker CPU ms per delivered message")],
}


def summary(args, runs: list[dict]) -> str:
    lines = []
    for mode in args.modes:
        for key, title in METRICS[mode]:
            med = {}
            for v in VARIANTS:
                values = [r[key] for r in runs if r["mode"] == mode and r["variant"] == v]
                if values:
                    med[v] = (statistics.median(values), values)
            if not med:
                continue
            lines.append(f"{mode}: {title}, median of {args.rounds} (each round)")
            base = med.get("baseline", (None,))[0]
            for v, (m, values) in med.items():
                vs = f"  {m / base - 1:+.1%} vs baseline" if base and v != "baseline" else ""
                each = ", ".join(f"{x:.4f}" for x in values)
                lines.append(f"  {v:<8} {m:.4f}{vs}   ({each})")
        spans = [r for r in runs if r["mode"] == mode and r["variant"] == "on"]
        if spans:
            complete = all(r["spans_complete"] for r in spans)
            per = statistics.median(r["spans"] / args.messages for r in spans)
            kib = statistics.median(r["export_bytes"] / args.messages for r in spans) / 1024
            lines.append(f"  export on: {per:.2f} spans and {kib:.2f} KiB of OTLP per message"
                         + ("" if complete else " (NOT every span arrived within the wait: see JSON)"))
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_load_args(ap)
    ap.set_defaults(messages=5000)
    ap.add_argument("--baseline", type=Path, required=True,
                    help="the sluice binary to compare with (a release build of the commit before)")
    ap.add_argument("--mode", choices=["standalone", "roles", "both"], default="standalone",
                    help="standalone (default), ingress + worker on NATS (roles), or both")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every variant (default 3)")
    ap.add_argument("--concurrency", type=int, default=100, help="delivery.concurrency (default 100)")
    ap.add_argument("--nats-server", default=shutil.which("nats-server") or "nats-server")
    add_wait_args(ap)
    ap.add_argument("--skip-build", action="store_true", help="use the binary already built")
    ap.add_argument("--json", type=Path, help="also write every figure to this file as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    add_tool_args(ap)
    args = ap.parse_args()
    args.modes = ["standalone", "roles"] if args.mode == "both" else [args.mode]

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    check_tools(args, postfix=False)
    if not os.access(args.baseline, os.X_OK):
        raise BenchError(f"--baseline {args.baseline} is not an executable")
    if not args.skip_build:
        build("--bin", "sluice")
    binary = cargo_target_dir() / "release" / "sluice"
    if not binary.exists():
        raise BenchError(f"{binary} not built (run without --skip-build)")
    clean_environment()

    workdir = Path(tempfile.mkdtemp(prefix="sluice-tracing-"))
    log(f"work directory {workdir}")
    receiver = Receiver()
    res: dict = {"machine": {"cpus": os.cpu_count(), "clk_tck": CLK_TCK,
                             "loadavg_at_start": os.getloadavg()},
                 "commit": commit(), "baseline": str(args.baseline),
                 "load": {"messages": args.messages, "sessions": args.sessions, "size": args.size,
                          "reuse": args.reuse}, "runs": []}
    completed = False
    try:
        for rnd in range(1, args.rounds + 1):
            for mode in args.modes:
                # The variants interleave, so that a change in the machine's load
                # during the run falls on all of them alike.
                for variant in VARIANTS:
                    exe = args.baseline if variant == "baseline" else binary
                    res["runs"].append(measure(args, exe, workdir, mode, variant, rnd, receiver))
        completed = True
    finally:
        receiver.close()
        stop_all()
        if not completed or args.keep:
            log(f"configs, spools and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    res["machine"]["loadavg_at_end"] = os.getloadavg()
    load = res["machine"]["loadavg_at_start"]
    print()
    print(f"Sluice trace export cost, commit {res['commit']} vs {args.baseline}, "
          f"{res['machine']['cpus']} CPUs, load average {load[0]:.2f} at start, "
          f"{res['machine']['loadavg_at_end'][0]:.2f} at end")
    print(f"load: smtp-source -s {args.sessions} -m {args.messages} -l {args.size}"
          + (" -d" if args.reuse else "") + " -> relay -> smtp-sink, all on 127.0.0.1")
    if load[0] > 0.5 * (os.cpu_count() or 1):
        print("(the machine was busy with other work at the start: compare the variants of a "
              "round with each other rather than with other runs)")
    print(summary(args, res["runs"]))
    problems = [line for r in res["runs"] for line in r["log_problems"]]
    if problems:
        print(f"\n{len(problems)} WARN/ERROR lines in the relays' logs, first ones:")
        for line in problems[:10]:
            print("  " + line)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str) + "\n")
        print(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    run_main(main)
