"""Shared pieces of the Sluice benchmarks (`accept.py`, `deliver.py`): child processes
that are always stopped, free loopback ports, CPU time from /proc, the Prometheus text
format, smtp-source and smtp-sink, and starting `sluice standalone`.

Python 3.11 standard library only. Imported by the scripts beside it (they run as
`python3 bench/NAME.py`, so this directory is on sys.path).
"""

from __future__ import annotations

import json
import os
import re
import resource
import select
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
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS in /proc/{pid}/status")


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
    dir: Path
    proc: subprocess.Popen
    smtp: int
    admin: int
    log_path: Path
    stopped: bool = False
    exit_code: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def metrics(self) -> dict[str, float]:
        return scrape(self.admin)

    def shutdown(self) -> None:
        if not self.stopped:
            self.exit_code = stop(self.proc, signal.SIGTERM, timeout=STOP_TIMEOUT)
            self.stopped = True


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
    relay = Relay(d, proc, smtp, admin, log_path)
    relay = Relay(d, proc, smtp, admin, log_path)
    deadline = time.monotonic() + START_TIMEOUT
    url = f"http://127.0.0.1:{admin}/readyz"
    while True:
        if proc.poll() is not None:
            raise BenchError(f"relay exited with {proc.returncode} at start:\n{tail(log_path)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"relay not ready after {START_TIMEOUT}s:\n{tail(log_path)}")
        time.sleep(0.05)
    ehlo_check(smtp)  # the listener answers, and lazy initialisation is done
    log(f"relay {name}: pid {proc.pid}, smtp 127.0.0.1:{smtp}, admin 127.0.0.1:{admin}")
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
