"""Shared pieces of the Sluice benchmarks (`accept.py`, `deliver.py`, `scale.py`,
`operator.py`): child processes that are always stopped, free loopback ports, CPU time
and memory from /proc, the Prometheus text format, smtp-source and smtp-sink, starting
Sluice's roles and nats-server, driving the load until the sink has every message, a
private Postfix relay, and the command-line options the scripts share.

Python 3.11 standard library only. Imported by the scripts beside it (they run as
`python3 bench/NAME.py`, so this directory is on sys.path).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import select
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SENDER = "bench@sender.test"
RECIPIENT = "rcpt@foreign.test"
CLK_TCK = os.sysconf("SC_CLK_TCK")

BUILD_TIMEOUT = 1800
START_TIMEOUT = 30
STOP_TIMEOUT = 20


class BenchError(Exception):
    """A measurement could not be made or is not valid; the message says why."""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Child processes: every one started is registered here and stopped on exit.

_children: list[subprocess.Popen] = []


def spawn(cmd: list[str], **kw) -> subprocess.Popen:
    p = subprocess.Popen(cmd, **kw)
    _children.append(p)
    return p


def stop(p: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int | None:
    """Signals one child we started and waits for it, killing it if it will not go."""
    if p.poll() is None:
        try:
            p.send_signal(sig)
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log(f"pid {p.pid} ignored signal {sig} for {timeout}s; killing it")
            p.kill()
            p.wait(timeout=10)
    if p in _children:
        _children.remove(p)
    return p.returncode


# Things that are not our direct children (a daemon such as Postfix's master) register a
# function that stops them; stop_all runs those too, newest first.
_cleanups: list = []


def on_cleanup(fn):
    _cleanups.append(fn)
    return fn


def cleanup_done(fn) -> None:
    if fn in _cleanups:
        _cleanups.remove(fn)


def stop_all() -> None:
    for fn in reversed(list(_cleanups)):
        try:
            fn()
        except Exception as e:  # cleanup must go on
            log(f"cleanup {getattr(fn, '__name__', fn)} failed: {e}")
        cleanup_done(fn)
    for p in list(_children):
        try:
            stop(p, timeout=5)
        except Exception as e:  # cleanup must go on
            log(f"could not stop pid {p.pid}: {e}")


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


# ---------------------------------------------------------------------------------------
# Small helpers.

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"pid {proc.pid} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat (fields 14 and 15, clock ticks)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # fields[0] is field 3 (state)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def vmrss_kib(pid: int) -> int:
    return proc_status_kib(pid, "VmRSS")


def proc_status_kib(pid: int, field: str) -> int:
    """A memory figure of /proc/PID/status in KiB: VmRSS (resident now), VmHWM (its peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise BenchError(f"no {field} in /proc/{pid}/status")


def raise_fd_limit(needed: int) -> int:
    """Raises the soft RLIMIT_NOFILE (inherited by the children) as far as allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(needed, soft)
    for target_hard in (max(hard, want), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, target_hard), target_hard))
            break
        except (ValueError, OSError):
            continue
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft


def tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------------------------------
# Prometheus text format: enough to read counters and one histogram.

def scrape(admin_port: int) -> dict[str, float]:
    url = f"http://127.0.0.1:{admin_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
    except OSError as e:
        raise BenchError(f"cannot read {url}: {e}") from e
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            continue
    return out


def histogram(metrics: dict[str, float], name: str) -> tuple[list[tuple[float, float]], float, float]:
    """Returns ([(upper bound, cumulative count)], count, sum) of a histogram."""
    buckets = []
    pattern = re.compile(re.escape(name) + r'_bucket\{le="([^"]+)"\}')
    for key, value in metrics.items():
        m = pattern.fullmatch(key)
        if m:
            buckets.append((float(m.group(1)), value))  # float("+Inf") is inf
    if not buckets:
        raise BenchError(f"histogram {name} not found in /metrics")
    buckets.sort()
    return buckets, metrics.get(f"{name}_count", 0.0), metrics.get(f"{name}_sum", 0.0)


def histogram_delta(after, before):
    (ba, ca, sa), (bb, cb, sb) = after, before
    prev = dict(bb)
    return [(le, c - prev.get(le, 0.0)) for le, c in ba], ca - cb, sa - sb


def quantile(buckets: list[tuple[float, float]], count: float, q: float) -> tuple[float, float]:
    """The q-quantile of a cumulative histogram: (upper bound of its bucket, linear
    interpolation inside the bucket as Prometheus' histogram_quantile does). Seconds."""
    if count <= 0:
        return float("nan"), float("nan")
    rank = q * count
    lower, below = 0.0, 0.0
    for le, cumulative in buckets:
        if cumulative >= rank:
            if le == float("inf"):
                return le, lower  # beyond the last finite bound: only a lower bound is known
            inside = cumulative - below
            frac = (rank - below) / inside if inside else 1.0
            return le, lower + (le - lower) * frac
        lower, below = le, cumulative
    return float("inf"), lower


def counter_sum(metrics: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in metrics.items() if k == prefix or k.startswith(prefix + "{"))


def labeled(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k.startswith(prefix + "{") and v}


# ---------------------------------------------------------------------------------------
# Build and the relay.

def cargo_target_dir() -> Path:
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        cwd=REPO, check=True, capture_output=True, text=True, timeout=120,
    ).stdout
    return Path(json.loads(out)["target_directory"])


def build(*targets: str) -> None:
    """`cargo build --release` with these targets, e.g. ("--bin", "sluice")."""
    cmd = ["cargo", "build", "--release", *targets]
    log(" ".join(cmd))
    r = subprocess.run(cmd, cwd=REPO, timeout=BUILD_TIMEOUT)
    if r.returncode != 0:
        raise BenchError(f"cargo build failed with {r.returncode}")


@dataclass
class Relay:
    """A running Sluice process (any role): smtp is None for a role without a listener."""
    dir: Path
    proc: subprocess.Popen
    smtp: int | None
    admin: int
    log_path: Path
    stopped: bool = False
    exit_code: int | None = None
    name: str = "relay"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def metrics(self) -> dict[str, float]:
        return scrape(self.admin)

    def shutdown(self) -> None:
        if not self.stopped:
            self.exit_code = stop(self.proc, signal.SIGTERM, timeout=STOP_TIMEOUT)
            self.stopped = True


def wait_ready(proc: subprocess.Popen, name: str, admin: int, log_path: Path,
               timeout: float = START_TIMEOUT) -> None:
    """Until http://127.0.0.1:ADMIN/readyz answers 200; raises if the process exits first
    or the time runs out."""
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{admin}/readyz"
    while True:
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with {proc.returncode} at start:\n{tail(log_path)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"{name} not ready after {timeout}s:\n{tail(log_path)}")
        time.sleep(0.05)


def launch_relay(binary: Path, d: Path, name: str, smtp: int, admin: int) -> Relay:
    """Starts `sluice standalone --config d/sluice.yaml` (written by the caller) with its
    log in d/relay.log, and waits until it is ready and answers EHLO."""
    log_path = d / "relay.log"
    env = dict(os.environ, NO_COLOR="1")
    with open(log_path, "wb") as logf:
        proc = spawn(
            [str(binary), "standalone", "--config", str(d / "sluice.yaml")],
            cwd=d, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, env=env,
        )
    relay = Relay(d, proc, smtp, admin, log_path, name=name)
    wait_ready(proc, "relay", admin, log_path)
    ehlo_check(smtp)  # the listener answers, and lazy initialisation is done
    log(f"relay {name}: pid {proc.pid}, smtp 127.0.0.1:{smtp}, admin 127.0.0.1:{admin}")
    return relay


def launch_role(binary: Path, d: Path, name: str, argv: list[str], smtp: bool,
                env: dict[str, str] | None = None, ready: bool = True) -> Relay:
    """Starts `sluice ARGV --admin 127.0.0.1:0 --ports-file d/NAME.ports.json` (plus
    `--smtp 127.0.0.1:0` if `smtp`) with its log in d/NAME.log; reads the ports it bound
    from the ports file, waits for /readyz (unless not `ready`) and, with a listener,
    for an answer to EHLO. ARGV is the role and its flags, e.g. ["worker", "--config",
    CFG, "--nats-url", URL]; `env` adds variables (KUBECONFIG)."""
    log_path = d / f"{name}.log"
    ports_path = d / f"{name}.ports.json"
    cmd = [str(binary), *argv, "--admin", "127.0.0.1:0", "--ports-file", str(ports_path)]
    if smtp:
        cmd += ["--smtp", "127.0.0.1:0"]
    env = dict(os.environ, NO_COLOR="1", **(env or {}))
    with open(log_path, "wb") as logf:
        proc = spawn(cmd, cwd=d, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, env=env)
    want = {"admin", "smtp"} if smtp else {"admin"}
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with {proc.returncode} at start:\n{tail(log_path)}")
        try:
            ports = json.loads(ports_path.read_text())
        except (OSError, ValueError):
            ports = {}
        if want <= ports.keys():
            break
        if time.monotonic() > deadline:
            raise BenchError(f"{name}: {ports_path} lacks {sorted(want - ports.keys())} after "
                             f"{START_TIMEOUT}s:\n{tail(log_path)}")
        time.sleep(0.05)
    port_of = lambda key: int(ports[key].rsplit(":", 1)[1])  # noqa: E731
    relay = Relay(d, proc, port_of("smtp") if smtp else None, port_of("admin"), log_path, name=name)
    if ready:
        wait_ready(proc, name, relay.admin, log_path)
    if smtp:
        ehlo_check(relay.smtp)
    log(f"{name}: pid {proc.pid}, " + (f"smtp 127.0.0.1:{relay.smtp}, " if smtp else "")
        + f"admin 127.0.0.1:{relay.admin}: {' '.join(argv)}")
    return relay


def ehlo_check(port: int, timeout: float = 10) -> float:
    """One new session: greeting, EHLO, QUIT. Returns seconds taken; raises on failure."""
    started = time.monotonic()
    try:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="check.bench.test", timeout=timeout) as s:
            code, _ = s.ehlo()
            if code != 250:
                raise BenchError(f"EHLO answered {code}")
    except (OSError, smtplib.SMTPException) as e:
        raise BenchError(f"new session to 127.0.0.1:{port} failed: {e!r}") from e
    return time.monotonic() - started


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def log_problems(path: Path) -> list[str]:
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        line = ANSI.sub("", line)
        if re.search(r"\b(WARN|ERROR)\b", line):
            lines.append(line)
    return lines


# ---------------------------------------------------------------------------------------
# nats-server with JetStream on a fresh store (scale.py, operator.py).

@dataclass
class NatsServer:
    proc: subprocess.Popen
    port: int
    log_path: Path
    exit_code: int | None = None
    stopped: bool = False

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def shutdown(self) -> None:
        if not self.stopped:
            self.exit_code = stop(self.proc, signal.SIGTERM)
            self.stopped = True

    def problems(self) -> list[str]:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if re.search(r"\[(WRN|ERR|FTL)\]", line)]


def start_nats(binary: str, d: Path, extra: list[str] | None = None) -> NatsServer:
    """nats-server -js on a free loopback port with its store in d/nats-store; `extra`
    adds arguments (e.g. `-c FILE` for settings that have no flag)."""
    port = free_port()
    store = d / "nats-store"
    log_path = d / "nats-server.log"
    cmd = [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store), *(extra or [])]
    log(" ".join(cmd))
    with open(log_path, "wb") as logf:
        proc = spawn(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
    nats = NatsServer(proc, port, log_path)
    wait_for_port(port, proc, START_TIMEOUT)
    wait_until("nats-server says it is ready",
               lambda: "Server is ready" in log_path.read_text(errors="replace"), START_TIMEOUT, 0.05)
    return nats


def nats_version(binary: str) -> str:
    try:
        return subprocess.run([binary, "--version"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


# ---------------------------------------------------------------------------------------
# The measurements.

@dataclass
class SourceRun:
    wall: float
    client_cpu: float
    stderr: str


def run_source(port: int, args) -> SourceRun:
    cmd = [
        args.smtp_source, "-s", str(args.sessions), "-m", str(args.messages), "-l", str(args.size),
        "-f", SENDER, "-t", RECIPIENT, "-M", "source.bench.test",
    ]
    if args.reuse:
        cmd.append("-d")
    cmd.append(f"127.0.0.1:{port}")
    log(" ".join(cmd) + f"  (load average {os.getloadavg()[0]:.2f})")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.source_timeout)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"smtp-source did not finish within {args.source_timeout}s") from e
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if r.returncode != 0:
        raise BenchError(f"smtp-source exited with {r.returncode}: {r.stderr.strip()[-2000:]}")
    return SourceRun(wall, cpu, r.stderr.strip())


def read_line(stream, timeout: float) -> str:
    """One line from a child's stdout, within a time limit."""
    deadline = time.monotonic() + timeout
    buf = b""
    fd = stream.fileno()
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchError(f"no line from the child within {timeout}s (got {buf!r})")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 1)
            if not chunk:
                raise BenchError(f"the child closed its output (got {buf!r})")
            buf += chunk
    return buf.decode().strip()



def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "FAIL")




# ---------------------------------------------------------------------------------------
# smtp-sink with counters: how many messages it received, and over how many sessions.

SINK_COUNTERS = re.compile(rb"sess=(\d+) quit=(\d+) mesg=(\d+)\r")


@dataclass
class Sink:
    proc: subprocess.Popen
    port: int
    log_path: Path
    base_sessions: int = 0  # sessions counted before a measurement (the readiness probe)
    base_messages: int = 0  # messages counted before a measurement

    def counters(self) -> tuple[int, int]:
        """(messages, sessions) so far, from the last complete `-c` counter line."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 256))
                chunk = f.read()
        except OSError:
            return 0, 0
        found = SINK_COUNTERS.findall(chunk)
        if not found:
            return 0, 0
        sess, _quit, mesg = found[-1]
        return int(mesg), int(sess)

    def close(self) -> None:
        stop(self.proc, signal.SIGTERM, timeout=5)


def start_sink(smtp_sink: str, log_path: Path, counters: bool = True, backlog: int = 1000) -> Sink:
    """smtp-sink on a free loopback port: up to `backlog` sessions at once (-m) and a
    listen backlog of as many; `-c` writes running counters to log_path."""
    port = free_port()
    cmd = [smtp_sink]
    if counters:
        cmd.append("-c")
    if os.geteuid() == 0:
        cmd += ["-u", "nobody"]  # smtp-sink refuses to run as root without it
    cmd += ["-m", str(backlog), f"127.0.0.1:{port}", str(backlog)]
    log(" ".join(cmd))
    with open(log_path, "wb") as logf:
        proc = spawn(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
    sink = Sink(proc, port, log_path)
    wait_for_port(port, proc, START_TIMEOUT)
    return sink


# ---------------------------------------------------------------------------------------
# The shared driver: the load at a relay, until the sink has every message.

POLL = 0.02  # how often the sink's counter is read while the load runs, s


def split(total: int, parts: int) -> list[int]:
    """total cut into `parts` near-equal shares, the larger ones first: 20 -> [10, 10]."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def drive(args, ports: int | list[int], sink: Sink, alive) -> dict:
    """Runs smtp-source at 127.0.0.1:port and watches the sink's counter until it has
    received every message (or a time limit passes). `alive()` raises if the relay died.
    Times are monotonic seconds from the start of smtp-source.

    With several ports, one smtp-source per port, started together, each with its share of
    the sessions and of the messages (20 sessions and 20,000 messages over two ports: two
    smtp-source processes of 10 sessions and 10,000 messages each); the acceptance time
    is then until the last of them has finished."""
    ports = [ports] if isinstance(ports, int) else list(ports)
    if args.sessions < len(ports):
        raise BenchError(f"{args.sessions} sessions cannot be spread over {len(ports)} ports")
    cmds = []
    for port, sessions, messages in zip(ports, split(args.sessions, len(ports)),
                                        split(args.messages, len(ports))):
        cmd = [
            args.smtp_source, "-s", str(sessions), "-m", str(messages), "-l", str(args.size),
            "-f", SENDER, "-t", RECIPIENT, "-M", "source.bench.test",
        ]
        if args.reuse:
            cmd.append("-d")
        cmds.append(cmd + [f"127.0.0.1:{port}"])
    base_msgs, base_sess = sink.counters()
    for cmd in cmds:
        log(" ".join(cmd) + f"  (load average {os.getloadavg()[0]:.2f})")
    stem = sink.log_path.with_name(sink.log_path.stem + "-source")
    err_paths = [stem.with_suffix(".err") if len(cmds) == 1 else stem.with_name(f"{stem.name}{i + 1}.err")
                 for i in range(len(cmds))]
    sink_cpu0 = cpu_seconds(sink.proc.pid)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    sources = []
    t0 = time.monotonic()
    for cmd, err_path in zip(cmds, err_paths):
        with open(err_path, "wb") as errf:
            sources.append(spawn(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errf))
    source_ends: list[float | None] = [None] * len(sources)
    source_end = last = None
    client_cpu = float("nan")
    got = 0
    while True:
        now = time.monotonic()
        for i, src in enumerate(sources):
            if source_ends[i] is None and src.poll() is not None:
                source_ends[i] = now - t0
                stop(src)  # reaped already; only forgets it
                if src.returncode != 0:
                    raise BenchError(f"smtp-source exited with {src.returncode}: "
                                     f"{err_paths[i].read_text(errors='replace').strip()[-2000:]}")
        if source_end is None and all(e is not None for e in source_ends):
            source_end = now - t0
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            client_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        got = sink.counters()[0] - base_msgs
        if got >= args.messages and last is None:
            last = now - t0
            sink_cpu = cpu_seconds(sink.proc.pid) - sink_cpu0
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
    sink.base_messages, sink.base_sessions = base_msgs, base_sess
    log(f"accepted in {source_end:.2f}s, all {args.messages} at the sink after {last:.2f}s")
    return {
        "sources": len(cmds),
        "source_s": source_end,
        "source_each_s": source_ends,
        "last_delivered_s": last,
        "accept_msgs_per_s": args.messages / source_end,
        "e2e_msgs_per_s": args.messages / last,
        "sink_messages": msgs - base_msgs,
        "client_cpu_s": client_cpu,
        "sink_cpu_s": sink_cpu,
        "source_stderr": "\n".join(p.read_text(errors="replace").strip() for p in err_paths).strip(),
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


def ceiling(args, workdir: Path, sources: int = 1, name: str = "ceiling") -> dict:
    """The same load straight into a fresh smtp-sink, from `sources` smtp-source processes
    sharing the sessions and messages (see drive)."""
    sink = start_sink(args.smtp_sink, workdir / f"{name}-sink.log")
    try:
        r = drive(args, [sink.port] * sources, sink, lambda: None)
        r["sink_sessions"] = sink_sessions(sink)
        r["sink_messages_final"] = sink.counters()[0] - sink.base_messages
    finally:
        sink.close()
    log(f"{name}: {r['e2e_msgs_per_s']:.0f} msg/s")
    return r


# ---------------------------------------------------------------------------------------
# The process configuration and RelayPolicy the benchmarks give Sluice, and its queue.

def sluice_config(concurrency: int, per_destination: int, dns: int, smtp: int = 0,
                  admin: int | None = None) -> str:
    """The process configuration of a delivering relay: a relay listener on `smtp` (0 when
    a flag gives it), the admin listener when `admin` is given, limits out of the way."""
    admin_line = f'admin: "127.0.0.1:{admin}"\n' if admin is not None else ""
    return f"""\
hostname: relay.bench.test
listeners:
  - {{ name: smtp, address: "127.0.0.1:{smtp}", kind: relay }}
spool: spool
{admin_line}policies: [policy.yaml]
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


def queue_len(admin: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/queue", timeout=30) as r:
        return len(json.loads(r.read()))


# ---------------------------------------------------------------------------------------
# Postfix: a private instance in the temporary directory.

POSTFIX_MAIN = """\
# A private Postfix instance for the Sluice benchmarks: a relay for 127.0.0.0/8 to smtp-sink.
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
        # Read again once Postfix has stopped and the counters stand still: a message
        # delivered twice shows here.
        r["sink_messages_final"] = sink.counters()[0] - sink.base_messages
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
    if r["sink_messages_final"] != args.messages:
        errors.append(f"postfix: the sink received {r['sink_messages_final']} messages, not {args.messages}")
    if lg["sent"] != args.messages:
        errors.append(f"postfix: its log shows {lg['sent']} deliveries, not {args.messages}")
    r["errors"] = errors
    log(f"postfix: {r['e2e_msgs_per_s']:.0f} msg/s end to end, {r['cpu_ms_per_msg']:.3f} ms CPU/msg, "
        f"p99 {r['delay_p99_ms']:.0f} ms, sink sessions {r['sink_sessions']}")
    return r


# ---------------------------------------------------------------------------------------
# Command-line options the scripts share.

def add_load_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--messages", type=int, default=20000, help="smtp-source -m (default 20000)")
    ap.add_argument("--sessions", type=int, default=20, help="smtp-source -s (default 20)")
    ap.add_argument("--size", type=int, default=4096, help="smtp-source -l, payload bytes (default 4096)")
    ap.add_argument("--reuse", action="store_true",
                    help="smtp-source -d: several messages per connection (the issue's load opens one per message)")


def add_postfix_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--postfix-process-limit", type=int, default=100,
                    help="Postfix default_process_limit (default 100, Postfix's default)")
    ap.add_argument("--postfix-concurrency", type=int, default=20,
                    help="Postfix (smtp_|default_)destination_concurrency_limit (default 20)")


def add_wait_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--source-timeout", type=float, default=600, help="longest smtp-source run, s")
    ap.add_argument("--deliver-timeout", type=float, default=300,
                    help="longest wait for the sink after the last message was accepted, s")
    ap.add_argument("--settle-timeout", type=float, default=60,
                    help="longest wait for an empty queue after the sink has everything, s")


def add_tool_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--smtp-source", default=shutil.which("smtp-source") or "/usr/sbin/smtp-source")
    ap.add_argument("--smtp-sink", default=shutil.which("smtp-sink") or "/usr/sbin/smtp-sink")
    ap.add_argument("--postfix", default=shutil.which("postfix") or "/usr/sbin/postfix",
                    help="the postfix command; postqueue and postconf are taken from beside it")


def check_tools(args, postfix: bool) -> None:
    """smtp-source and smtp-sink are there; with `postfix`, so are Postfix and root."""
    for tool in (args.smtp_source, args.smtp_sink):
        if not os.access(tool, os.X_OK):
            raise BenchError(f"{tool} not found: apt-get install postfix (its smtp-source and smtp-sink)")
    if postfix:
        if os.geteuid() != 0:
            raise BenchError("running a private Postfix instance needs root (or --skip-postfix)")
        if not os.access(args.postfix, os.X_OK):
            raise BenchError(f"{args.postfix} not found: apt-get install postfix, or --skip-postfix")


def commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                          capture_output=True, text=True).stdout.strip()


# ---------------------------------------------------------------------------------------
# Main.

def run_main(main) -> None:
    """Runs a benchmark's main(): its return value is the exit status; every process it
    started is stopped on the way out, whatever ends it (error, Ctrl-C)."""
    try:
        sys.exit(main())
    except BenchError as e:
        stop_all()
        print(f"bench: error: {e}", file=sys.stderr)
        sys.exit(1)
    except BaseException:
        stop_all()
        raise
