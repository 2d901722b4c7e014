#!/usr/bin/env python3
"""Sluice operator benchmark: how fast a RelayPolicy change reaches an SMTP decision, and
what 1,000 RelayPolicies with 10,000 users cost the operator, against the emulated
Kubernetes API server of the tests (tests/kube_emulator.py, kmock).

    python3 bench/operator.py                  # build, measure, print a markdown table

1. latency: nats-server (JetStream), the emulator, `sluice operator` and `sluice ingress`.
   One RelayPolicy in `mail` (mode authenticated) whose trustedNetworks has 127.0.0.1/32;
   then, 20 times, 127.0.0.1/32 is taken out of trustedNetworks and put back (a merge
   patch to the emulator). From the API's answer to the change, a new SMTP session from
   127.0.0.1 every ~5 ms until `RCPT TO:<x@foreign.example>` gets 554 (taken out) or 250
   (put back); meanwhile the operator's `sluice_policy_in_force_info` (snapshot written to
   NATS) and the ingress's `sluice_policy_reloads_total{result="applied"}` (snapshot
   applied) are read on the same ticks, which splits the time.
2. scale: 1,000 RelayPolicies of 10 users each, given as `passwordHash` (one argon2id
   hash for all), a relay domain per policy, created in the emulator before the operator
   starts. Until `sluice_operator_policies{verdict="accepted"}` is 1,000 and every status
   is Ready=True; the compile time, the operator's VmRSS/VmHWM; then one policy changed:
   the recompile time, until its status observes the new generation, and until every
   status names the new snapshot revision. The emulator's and the operator's CPU.

Loopback only; every wait is bounded; every process started is stopped on exit and on
Ctrl-C. Python 3.11 standard library only (the emulator itself needs kmock). A benchmark
for people, never a timed test. See bench/README.md for how to read the figures.
"""

from __future__ import annotations

import sys

# This file's name shadows the standard library's `operator` while its directory leads
# sys.path (`python3 -S` has not imported `operator` before the script runs): the standard
# library is imported without that directory, then common.py from beside this file.
_HERE = sys.path.pop(0)
import operator as _stdlib_operator  # noqa: E402,F401  the standard one, cached for everyone

import argparse  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, _HERE)

from common import (  # noqa: E402
    REPO, START_TIMEOUT, BenchError, Relay, _on_signal, build, cargo_target_dir, commit,
    cpu_seconds, labeled, launch_role, log, log_problems, nats_version, proc_status_kib,
    run_main, spawn, start_nats, stop, stop_all, tail, wait_until,
)

NAMESPACE = "mail"
POLICIES = f"/apis/sluice.dev/v1alpha1/namespaces/{NAMESPACE}/relaypolicies"
MANAGER = "sluice-bench"
PROBE_SENDER = b"bench@sender.test"
PROBE_RECIPIENT = b"x@foreign.example"
# Always in trustedNetworks, so that taking 127.0.0.1/32 out never leaves the list empty.
OTHER_NETWORK = "192.0.2.0/24"
TRUSTED = "127.0.0.1/32"
IN_FORCE = "sluice_policy_in_force_info"  # the operator's: the snapshot it wrote to NATS
APPLIED = "sluice_policy_revision_info"  # an ingress's: the snapshot its new sessions get
ACCEPTED = 'sluice_operator_policies{verdict="accepted"}'
REFUSED = 'sluice_operator_policies{verdict="refused"}'


# ---------------------------------------------------------------------------------------
# The emulated API server and a small client for it.

@dataclass
class Emulator:
    proc: subprocess.Popen
    port: int
    log_path: Path
    kubeconfig: Path

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def shutdown(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()  # --exit-on-stdin-eof
        stop(self.proc, signal.SIGTERM, timeout=10)


KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
  - name: emulator
    cluster: {{ server: "http://127.0.0.1:{port}" }}
users:
  - name: emulator
    user: {{}}
contexts:
  - name: emulator
    context: {{ cluster: emulator, user: emulator, namespace: {namespace} }}
current-context: emulator
"""


def start_emulator(d: Path) -> Emulator:
    """tests/kube_emulator.py on a free port (as tests/common/kube.rs starts it), its
    request log in d/emulator.log, and a kubeconfig for it (no authentication)."""
    port_file = d / "emulator.port"
    log_path = d / "emulator.log"
    cmd = [sys.executable, str(REPO / "tests" / "kube_emulator.py"), "--host", "127.0.0.1",
           "--port", "0", "--port-file", str(port_file), "--exit-on-stdin-eof"]
    log(" ".join(cmd))
    with open(log_path, "wb") as logf:
        proc = spawn(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=logf)

    def answering():
        if proc.poll() is not None:
            raise BenchError(f"the emulator exited with {proc.returncode} (is kmock installed? "
                             f"scripts/install-test-deps):\n{tail(log_path)}")
        try:
            port = int(port_file.read_text().strip())
            status, _ = Kube(port).request("GET", "/version")
        except (OSError, ValueError, http.client.HTTPException):
            return None
        return port if status == 200 else None

    port = wait_until("the Kubernetes API emulator answers GET /version", answering, START_TIMEOUT, 0.05)
    kubeconfig = d / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG.format(port=port, namespace=NAMESPACE))
    log(f"emulator: pid {proc.pid}, http://127.0.0.1:{port}")
    return Emulator(proc, port, log_path, kubeconfig)


class Kube:
    """Plain HTTP/1.1 to the emulator over one keep-alive connection (one per thread)."""

    def __init__(self, port: int):
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body=None,
                content_type: str = "application/json") -> tuple[int, dict]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        for attempt in (1, 2):  # once more on a connection the server had closed
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                r = self.conn.getresponse()
                text = r.read()
                return r.status, (json.loads(text) if text else {})
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def ok(self, method: str, path: str, body=None, content_type: str = "application/json") -> dict:
        status, obj = self.request(method, path, body, content_type)
        if status not in (200, 201):
            raise BenchError(f"{method} {path}: {status} {obj.get('message', obj)}")
        return obj

    def create(self, policy: dict) -> dict:
        return self.ok("POST", POLICIES, policy)

    def patch_spec(self, name: str, spec: dict) -> dict:
        return self.ok("PATCH", f"{POLICIES}/{name}", {"spec": spec}, "application/merge-patch+json")

    def get(self, name: str) -> dict:
        return self.ok("GET", f"{POLICIES}/{name}")

    def list(self) -> list[dict]:
        return self.ok("GET", POLICIES)["items"]

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def ready(policy: dict) -> dict | None:
    """The Ready condition of a policy's status, if there is one."""
    for c in (policy.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c
    return None


def observed(policy: dict) -> bool:
    """The status was written for the policy's current generation."""
    status = policy.get("status") or {}
    gen = policy["metadata"].get("generation")
    c = ready(policy)
    return status.get("observedGeneration") == gen and c is not None and c.get("observedGeneration") == gen


def policy_doc(name: str, spec: dict) -> dict:
    return {"apiVersion": "sluice.dev/v1alpha1", "kind": "RelayPolicy",
            "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}


# ---------------------------------------------------------------------------------------
# The Sluice processes.

def metrics_of(relay: Relay) -> dict[str, float]:
    return relay.metrics()


def revision(m: dict[str, float], info: str = IN_FORCE) -> str | None:
    """The revision of an info metric, `NAME{revision="..."} 1`."""
    for key in labeled(m, info):
        return key.split('revision="', 1)[1].rstrip('"}')
    return None


class ReadyWatch:
    """Asks the operator's /readyz every 50 ms, in a thread, until it answers 200: when
    that was (s after `t0`), else what it said last. The measurements do not wait for it:
    what they follow (metrics, statuses, SMTP replies) shows the operator at work."""

    def __init__(self, admin: int, t0: float):
        self.url = f"http://127.0.0.1:{admin}/readyz"
        self.t0 = t0
        self.ready_s: float | None = None
        self.last = "not asked yet"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=2) as r:
                    if r.status == 200:
                        self.ready_s = time.monotonic() - self.t0
                        self.last = "200"
                        return
            except urllib.error.HTTPError as e:
                self.last = f"{e.code} {e.read().decode(errors='replace').strip()[:200]}"
            except OSError as e:
                self.last = repr(e)
            self._stop.wait(0.05)

    def close(self) -> dict:
        self._stop.set()
        self._thread.join(timeout=5)
        return {"ready_s": self.ready_s, "last": self.last}


def start_operator(binary: Path, d: Path, nats_url: str, emu: Emulator, key: Path) -> tuple[Relay, ReadyWatch]:
    """`sluice operator` on the emulator; returns once its admin port is known (its
    readiness is watched, not waited for)."""
    t0 = time.monotonic()
    argv = ["operator", "--nats-url", nats_url, "--hostname", "operator.bench.test",
            "--namespace", NAMESPACE, "--secrets-key-file", str(key), "--no-leader-election"]
    op = launch_role(binary, d, "operator", argv, smtp=False,
                     env={"KUBECONFIG": str(emu.kubeconfig)}, ready=False)
    return op, ReadyWatch(op.admin, t0)


def nats_args(args, d: Path) -> list[str]:
    """nats-server's defaults, or with --nats-max-payload a configuration file raising
    max_payload (1 MiB by default; the policy snapshot is one KV value, one message)."""
    if not args.nats_max_payload:
        return []
    conf = d / "nats-server.conf"
    conf.write_text(f"max_payload: {args.nats_max_payload}\n")
    return ["-c", str(conf)]


def first_problem(path: Path) -> str | None:
    """The first WARN or ERROR line of a log (read line by line: it may be large)."""
    with open(path, errors="replace") as f:
        for line in f:
            if " WARN " in line or " ERROR " in line:
                return line.strip()
    return None


def secrets_key(d: Path) -> Path:
    key = d / "secrets.key"
    key.write_bytes(os.urandom(32).hex().encode())
    key.chmod(0o600)
    return key


def rcpt_probe(port: int, timeout: float = 5) -> tuple[int, float]:
    """One new SMTP session from 127.0.0.1: EHLO, MAIL, RCPT to a foreign domain. Returns
    the RCPT reply code and when the greeting arrived (monotonic s): the ingress takes the
    policy a session keeps to its end before it greets, so a new decision was in force then."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        f = s.makefile("rb")

        def reply() -> int:
            while True:
                line = f.readline(1024)
                if len(line) < 4:
                    raise BenchError(f"SMTP: bad reply line {line!r}")
                if line[3:4] != b"-":
                    return int(line[:3])

        def expect(cmd: bytes | None, want: int) -> None:
            if cmd:
                s.sendall(cmd)
            code = reply()
            if code != want:
                raise BenchError(f"SMTP: {cmd!r} answered {code}, not {want}")

        expect(None, 220)
        greeted = time.monotonic()
        expect(b"EHLO probe.bench.test\r\n", 250)
        expect(b"MAIL FROM:<" + PROBE_SENDER + b">\r\n", 250)
        s.sendall(b"RCPT TO:<" + PROBE_RECIPIENT + b">\r\n")
        code = reply()
        s.sendall(b"QUIT\r\n")
        return code, greeted


def pctl(values: list[float], q: float) -> float:
    """Nearest-rank percentile of a small sample."""
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, max(0, int(-(-q * len(v) // 1)) - 1))]


# ---------------------------------------------------------------------------------------
# 1. Latency: a changed trustedNetworks to a changed SMTP decision.

def latency(args, binary: Path, workdir: Path) -> dict:
    d = workdir / "latency"
    d.mkdir()
    nats = start_nats(args.nats_server, d, nats_args(args, d))
    emu = start_emulator(d)
    kube = Kube(emu.port)
    res: dict = {"changes": []}
    procs: list[Relay] = []
    try:
        kube.create(policy_doc("bench", {"mode": "authenticated",
                                         "trustedNetworks": [TRUSTED, OTHER_NETWORK]}))
        op, readyz = start_operator(binary, d, nats.url, emu, secrets_key(d))
        procs.append(op)
        wait_until("the operator wrote a snapshot", lambda: revision(op.metrics()), START_TIMEOUT, 0.05)
        ing = launch_role(binary, d, "ingress", ["ingress", "--nats-url", nats.url,
                                                 "--hostname", "ingress.bench.test"], smtp=True)
        procs.insert(0, ing)
        wait_until("the policy is Ready", lambda: (ready(kube.get("bench")) or {}).get("status") == "True",
                   START_TIMEOUT, 0.05)
        code, _ = rcpt_probe(ing.smtp)
        if code != 250:
            raise BenchError(f"RCPT from a trusted 127.0.0.1 answered {code}, not 250")
        cpu0 = {"operator": cpu_seconds(op.pid), "ingress": cpu_seconds(ing.pid), "emulator": emu.cpu(),
                "nats-server": cpu_seconds(nats.proc.pid)}
        for i in range(args.changes):
            trusted = i % 2 == 1  # the first change takes 127.0.0.1/32 out
            r = one_change(args, kube, op, ing, trusted)
            r["n"] = i + 1
            res["changes"].append(r)
            log(f"change {i + 1}/{args.changes} ({'put back' if trusted else 'taken out'}): "
                f"SMTP {fmt_ms(r['smtp_s'])}, written {fmt_ms(r['written_s'])}, "
                f"applied {fmt_ms(r['applied_s'])}, status {fmt_ms(r['status_s'])}, {r['probes']} probes")
        res["cpu_s"] = {"operator": cpu_seconds(op.pid) - cpu0["operator"],
                        "ingress": cpu_seconds(ing.pid) - cpu0["ingress"],
                        "emulator": emu.cpu() - cpu0["emulator"],
                        "nats-server": cpu_seconds(nats.proc.pid) - cpu0["nats-server"]}
        res["operator_metrics"] = {k: v for k, v in op.metrics().items() if k.startswith("sluice_operator_")}
        res["operator_readyz"] = readyz.close()
        for p in (ing, op):
            p.shutdown()
        res["exit_codes"] = {"operator": op.exit_code, "ingress": ing.exit_code}
        res["log_problems"] = {"operator": log_problems(op.log_path), "ingress": log_problems(ing.log_path)}
    finally:
        for p in procs:
            p.shutdown()
        kube.close()
        emu.shutdown()
        nats.shutdown()
    res["nats_problems"] = nats.problems()
    return res


def one_change(args, kube: Kube, op: Relay, ing: Relay, trusted: bool) -> dict:
    """One change of trustedNetworks; then, every `poll` s, the operator's and the
    ingress's revision metrics, a new SMTP session until the decision flips, and the
    policy until its status observes the new generation."""
    want = 250 if trusted else 554
    rev0 = revision(op.metrics())
    applied0 = revision(ing.metrics(), APPLIED)
    networks = [TRUSTED, OTHER_NETWORK] if trusted else [OTHER_NETWORK]
    sent = time.monotonic()
    obj = kube.patch_spec("bench", {"trustedNetworks": networks})
    t0 = time.monotonic()  # the API has accepted the change
    generation = obj["metadata"]["generation"]
    written = applied = flipped = status_at = probed = None
    probes, codes = 0, {}
    deadline = t0 + args.change_timeout
    tick = t0
    while flipped is None or status_at is None:
        if time.monotonic() > deadline:
            raise BenchError(f"change to {'add' if trusted else 'remove'} {TRUSTED}: not done within "
                             f"{args.change_timeout}s (RCPT replies: {codes}; snapshot written: "
                             f"{written is not None}, applied by the ingress: {applied is not None}, "
                             f"status observed: {status_at is not None})\noperator log:\n{tail(op.log_path)}")
        if written is None and revision(op.metrics()) != rev0:
            written = time.monotonic()
        if applied is None and revision(ing.metrics(), APPLIED) != applied0:
            applied = time.monotonic()
        if flipped is None:
            code, greeted = rcpt_probe(ing.smtp)
            probed = time.monotonic()
            probes += 1
            codes[code] = codes.get(code, 0) + 1
            if code == want:
                flipped = greeted
            elif code not in (250, 554):
                raise BenchError(f"RCPT answered {code}, neither 250 nor 554")
        if status_at is None and observed(kube.get("bench")):
            status_at = time.monotonic()
        tick += args.poll
        time.sleep(max(0.0, tick - time.monotonic()))
    # Each metric is read once a tick, before the probe: a change is seen up to a tick
    # late. The operator sets its metric once NATS has acknowledged the write, and the
    # ingress its own just after new sessions get the snapshot, so a flip can be seen on
    # the tick before either shows: the flip bounds them. The flip itself is known to
    # within a probe: after the previous probe's greeting, by this one's.
    written = min(written or flipped, flipped)
    applied = min(applied or flipped, flipped)
    rev_written, rev_applied = revision(op.metrics()), revision(ing.metrics(), APPLIED)
    if rev_written != rev_applied or rev_written == rev0:
        raise BenchError(f"after the flip the operator has {rev_written} in force (before: {rev0}) "
                         f"and the ingress applies {rev_applied}")
    return {
        "trusted": trusted,
        "generation": generation,
        "api_s": t0 - sent,
        "written_s": written - t0,
        "applied_s": applied - t0,
        "smtp_s": flipped - t0,
        "status_s": status_at - t0,
        "probes": probes,
        "tick_s": (probed - t0) / probes,
        "codes": codes,
        "revision": rev_written,
    }


# ---------------------------------------------------------------------------------------
# 2. Scale: 1,000 policies, 10,000 users.

def hash_password(binary: Path) -> str:
    r = subprocess.run([str(binary), "policy", "hash-password"], input="pw\n", capture_output=True,
                       text=True, timeout=60)
    if r.returncode != 0 or not r.stdout.startswith("$argon2id$"):
        raise BenchError(f"sluice policy hash-password failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout.strip()


def scale_policy(i: int, users: int, hashed: str, extra_sender: bool = False) -> dict:
    domain = f"d{i:04d}.bench.test"
    spec = {
        "relayDomains": [domain],
        "users": [{"name": f"u{i:04d}-{j:02d}", "passwordHash": hashed,
                   "allowedSenders": [f"u{i:04d}-{j:02d}@{domain}"]} for j in range(users)],
    }
    if extra_sender:
        spec["users"][0]["allowedSenders"].append(f"@changed.{domain}")
    return policy_doc(f"p{i:04d}", spec)


def create_all(port: int, docs: list[dict], threads: int) -> None:
    """POSTs every document, over `threads` keep-alive connections."""
    errors: list[str] = []
    chunks = [docs[t::threads] for t in range(threads)]

    def work(chunk):
        kube = Kube(port)
        try:
            for doc in chunk:
                kube.create(doc)
        except Exception as e:  # reported below
            errors.append(repr(e))
        finally:
            kube.close()

    ts = [threading.Thread(target=work, args=(c,), daemon=True) for c in chunks]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=600)
    if errors or any(t.is_alive() for t in ts):
        raise BenchError(f"creating the policies failed: {errors[:3] or 'a thread did not finish in 600s'}")


def scale(args, binary: Path, workdir: Path) -> dict:
    d = workdir / "scale"
    d.mkdir()
    n, per = args.policies, args.users_per_policy
    hashed = hash_password(binary)
    nats = start_nats(args.nats_server, d, nats_args(args, d))
    emu = start_emulator(d)
    kube = Kube(emu.port)
    res: dict = {"policies": n, "users": n * per}
    op: Relay | None = None
    try:
        docs = [scale_policy(i, per, hashed) for i in range(n)]
        cpu_e0 = emu.cpu()
        t = time.monotonic()
        create_all(emu.port, docs, args.threads)
        res["create_s"] = time.monotonic() - t
        res["create_emulator_cpu_s"] = emu.cpu() - cpu_e0
        log(f"{n} policies created in {res['create_s']:.1f}s")
        emu_rss0 = proc_status_kib(emu.proc.pid, "VmRSS")

        cpu_e0 = emu.cpu()
        t0 = time.monotonic()
        deadline = t0 + args.scale_timeout
        op, readyz = start_operator(binary, d, nats.url, emu, secrets_key(d))

        def all_accepted():
            if op.proc.poll() is not None:
                raise BenchError(f"the operator exited with {op.proc.returncode}:\n{tail(op.log_path)}")
            m = op.metrics()
            return m if m.get(ACCEPTED, 0) >= n else None

        m = wait_until(f"{ACCEPTED} is {n}", all_accepted, max(1.0, deadline - time.monotonic()), 0.1)
        res["accepted_s"] = time.monotonic() - t0
        res["initial_compile_s"] = m.get("sluice_operator_last_compile_seconds")
        res["initial_compiles"] = m.get("sluice_operator_compiles_total")
        res["refused"] = m.get(REFUSED, 0)
        log(f"all {n} accepted after {res['accepted_s']:.1f}s (compile {res['initial_compile_s']:.3f}s, "
            f"{res['initial_compiles']:.0f} compiles)")

        stuck_since = [None]

        def stuck(m: dict[str, float]) -> None:
            failed = m.get('sluice_operator_failures_total{reason="write_snapshot"}', 0)
            if revision(m) is None and failed:
                # Every reconcile fails writing the snapshot, and retries: fail fast, saying why.
                stuck_since[0] = stuck_since[0] or time.monotonic()
                if time.monotonic() - stuck_since[0] > args.stuck_timeout:
                    raise BenchError(
                        f"no snapshot in force {time.monotonic() - t0:.0f}s after the operator started: "
                        f"{failed:.0f} failed writes so far (sluice_operator_failures_total"
                        f"{{reason=\"write_snapshot\"}}), no status written. The operator's first "
                        f"warning:\n{first_problem(op.log_path)}")

        def ready_at(p: dict, rev: str | None) -> bool:
            return ((ready(p) or {}).get("status") == "True" and observed(p)
                    and (p.get("status") or {}).get("revision") == rev)

        done = StatusesDone(args, op, kube, n, 0.0, ready_at, stuck)
        res["all_ready_s"] = wait_until("every status is Ready=True", done, max(1.0, deadline - time.monotonic()),
                                        0.05) - t0
        res["startup_emulator_cpu_s"] = emu.cpu() - cpu_e0
        res["startup_operator_cpu_s"] = cpu_seconds(op.pid)
        res["startup_cpu_wall_s"] = time.monotonic() - t0
        log(f"every status Ready=True after {res['all_ready_s']:.1f}s")
        settle(op)
        m = op.metrics()
        res["rss_kib"] = proc_status_kib(op.pid, "VmRSS")
        res["hwm_kib"] = proc_status_kib(op.pid, "VmHWM")
        res["emulator_rss_kib"] = [emu_rss0, proc_status_kib(emu.proc.pid, "VmRSS")]
        res["after_startup_metrics"] = {k: v for k, v in m.items() if k.startswith("sluice_operator_")}

        res["change"] = change_one(args, kube, op, emu, n, per, hashed)
        res["rss_after_change_kib"] = proc_status_kib(op.pid, "VmRSS")
        res["hwm_after_change_kib"] = proc_status_kib(op.pid, "VmHWM")
        res["operator_metrics"] = {k: v for k, v in op.metrics().items() if k.startswith("sluice_operator_")}
        res["operator_readyz"] = readyz.close()
        op.shutdown()
        res["exit_code"] = op.exit_code
        problems = log_problems(op.log_path)
        res["log_problems"] = problems
    finally:
        if op is not None:
            op.shutdown()
        kube.close()
        emu.shutdown()
        nats.shutdown()
    return res


class StatusesDone:
    """A wait_until check for "every policy's status is as wanted", cheap to call often:
    true (the time, monotonic s) once the operator has written `n` statuses since its
    status_writes_total was `writes0` and a list of the policies shows `good(policy,
    revision in force)` for all of them. The list (some 0.1 s of the emulator's time
    for 1,000 policies) is made when the counter gets there and then at most every
    --list-interval; the time returned is when the counter was seen there, if the first
    list confirmed it, else when a list did. `stuck(metrics)` may raise."""

    def __init__(self, args, op: Relay, kube: Kube, n: int, writes0: float, good, stuck=None):
        self.args, self.op, self.kube, self.n, self.writes0 = args, op, kube, n, writes0
        self.good, self.stuck = good, stuck
        self.counted: float | None = None
        self.next_list = 0.0
        self.lists = 0
        self.seen = -1

    def __call__(self) -> float | None:
        m = self.op.metrics()
        if self.stuck:
            self.stuck(m)
        now = time.monotonic()
        if self.counted is None:
            if m.get("sluice_operator_status_writes_total", 0) - self.writes0 < self.n:
                return None
            self.counted = now
        if now < self.next_list:
            return None
        rev = revision(m)
        items = self.kube.list()
        self.lists += 1
        self.next_list = time.monotonic() + self.args.list_interval
        good = sum(1 for p in items if self.good(p, rev))
        if good != self.seen:
            log(f"  {good} of {len(items)} statuses as wanted at revision {rev}")
            self.seen = good
        if len(items) == self.n and good == self.n:
            return self.counted if self.lists == 1 else now
        return None


def settle(op: Relay, quiet: float = 2.0, timeout: float = 120) -> None:
    """Until the operator's reconcile and status-write counters stand still for `quiet` s."""
    keys = ('sluice_operator_reconciles_total{result="ok"}', "sluice_operator_status_writes_total",
            "sluice_operator_compiles_total")
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        m = op.metrics()
        now = tuple(m.get(k, 0.0) for k in keys)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.2)
    log(f"the operator did not settle within {timeout}s; measuring anyway")


def change_one(args, kube: Kube, op: Relay, emu: Emulator, n: int, per: int, hashed: str) -> dict:
    """Changes one policy (a second allowedSenders entry for its first user), then: the
    recompile, that policy's status for the new generation, every status at the new revision."""
    i = n // 2
    name = f"p{i:04d}"
    m0 = op.metrics()
    compiles0 = m0.get("sluice_operator_compiles_total", 0.0)
    writes0 = m0.get("sluice_operator_status_writes_total", 0.0)
    rev0 = revision(m0)
    cpu_e0, cpu_o0 = emu.cpu(), cpu_seconds(op.pid)
    sent = time.monotonic()
    obj = kube.patch_spec(name, scale_policy(i, per, hashed, extra_sender=True)["spec"])
    t0 = time.monotonic()
    generation = obj["metadata"]["generation"]
    deadline = t0 + args.change_timeout * 6

    def recompiled():
        m = op.metrics()
        # compiles_total grows at the end of the compile; the revision changes once the
        # snapshot is written, after the compile's duration is stored.
        return m if m.get("sluice_operator_compiles_total", 0) > compiles0 and revision(m) != rev0 else None

    m = wait_until("the operator recompiled", recompiled, deadline - time.monotonic(), 0.01)
    written = time.monotonic() - t0
    rev1 = revision(m)

    def accepted(p: dict) -> bool:
        return observed(p) and (ready(p) or {}).get("status") == "True"

    status_at = wait_until(f"{name}'s status observes generation {generation}",
                           lambda: accepted(kube.get(name)) and time.monotonic(),
                           max(1.0, deadline - time.monotonic()), 0.02)

    done = StatusesDone(args, op, kube, n, writes0, lambda p, rev: (p.get("status") or {}).get("revision") == rev)
    all_at = wait_until(f"every status names revision {rev1}", done, max(1.0, deadline - time.monotonic()), 0.05)
    cpu_e, cpu_o, wall = emu.cpu() - cpu_e0, cpu_seconds(op.pid) - cpu_o0, time.monotonic() - sent
    settle(op)
    m1 = op.metrics()
    return {
        "policy": name,
        "generation": generation,
        "api_s": t0 - sent,
        "snapshot_written_s": written,
        "compile_s": m.get("sluice_operator_last_compile_seconds"),
        "compiles": m1.get("sluice_operator_compiles_total", 0) - compiles0,
        "status_observed_s": status_at - t0,
        "all_statuses_s": all_at - t0,
        "status_writes": m1.get("sluice_operator_status_writes_total", 0) - writes0,
        "emulator_cpu_s": cpu_e,
        "operator_cpu_s": cpu_o,
        "cpu_wall_s": wall,
        "revisions": [rev0, rev1],
    }


# ---------------------------------------------------------------------------------------
# Output.

def fmt_ms(s: float | None) -> str:
    return "-" if s is None else f"{s * 1000:.0f} ms"


def fmt_s(s: float | None) -> str:
    return "-" if s is None else f"{s:.2f} s"


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB"


def summary(res: dict) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    lat = res.get("latency")
    if lat and lat["changes"]:
        ch = lat["changes"]

        def dist(key: str) -> str:
            v = [c[key] for c in ch]
            return (f"{statistics.median(v) * 1000:.0f} / {pctl(v, 0.9) * 1000:.0f} / "
                    f"{max(v) * 1000:.0f} ms")

        rows += [
            (f"change → SMTP decision flipped ({len(ch)} changes), median / p90 / max", dist("smtp_s")),
            ("  of which change → snapshot written (operator in force)", dist("written_s")),
            ("  of which change → snapshot applied (ingress sluice_policy_revision_info)", dist("applied_s")),
            ("change → status observes the generation", dist("status_s")),
            ("API round trip of the change (before the clock starts)", dist("api_s")),
            ("operator start → /readyz 200", readyz_cell(lat["operator_readyz"])),
            ("probes per change (new SMTP session each), mean; mean tick",
             f"{statistics.mean(c['probes'] for c in ch):.1f}; "
             f"{statistics.mean(c['tick_s'] for c in ch) * 1000:.1f} ms"),
            ("CPU over the changes: operator / ingress / emulator / nats-server",
             " / ".join(f"{lat['cpu_s'][k]:.2f} s" for k in ("operator", "ingress", "emulator", "nats-server"))),
        ]
    sc = res.get("scale")
    if sc and "all_ready_s" in sc:
        c = sc["change"]
        rows += [
            (f"{sc['policies']:,} policies / {sc['users']:,} users created in the emulator",
             f"{fmt_s(sc['create_s'])} (emulator CPU {sc['create_emulator_cpu_s']:.1f} s)"),
            ("operator start → /readyz 200 (watches synced)", readyz_cell(sc["operator_readyz"])),
            (f"operator start → {sc['policies']:,} accepted (compiled; metric)", fmt_s(sc["accepted_s"])),
            ("initial compile (sluice_operator_last_compile_seconds)",
             f"{fmt_s(sc['initial_compile_s'])} ({sc['initial_compiles']:.0f} compiles to get there)"),
            ("operator start → every status Ready=True", fmt_s(sc["all_ready_s"])),
            ("CPU during start-up: operator / emulator",
             f"{sc['startup_operator_cpu_s']:.1f} s / {sc['startup_emulator_cpu_s']:.1f} s "
             f"over {sc['startup_cpu_wall_s']:.1f} s"),
            ("operator VmRSS / VmHWM after settling", f"{mib(sc['rss_kib'])} / {mib(sc['hwm_kib'])}"),
            ("one policy changed: recompile (last_compile_seconds)", fmt_s(c["compile_s"])),
            ("  change → new snapshot written", fmt_s(c["snapshot_written_s"])),
            ("  change → its status observes the new generation", fmt_s(c["status_observed_s"])),
            ("  change → every status names the new revision",
             f"{fmt_s(c['all_statuses_s'])} ({c['status_writes']:.0f} status writes)"),
            ("  CPU: operator / emulator",
             f"{c['operator_cpu_s']:.1f} s / {c['emulator_cpu_s']:.1f} s over {c['cpu_wall_s']:.1f} s"),
            ("operator VmRSS / VmHWM after the change",
             f"{mib(sc['rss_after_change_kib'])} / {mib(sc['hwm_after_change_kib'])}"),
        ]
    return rows


def readyz_cell(r: dict) -> str:
    return fmt_s(r["ready_s"]) if r["ready_s"] is not None else f"never (last: {r['last']})"


def table(rows: list[tuple[str, str]]) -> str:
    out = ["| figure | value |", "| --- | --: |"]
    out += [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(out)


def versions(binary: Path | None, nats_server: str) -> dict:
    def run(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"
    kmock = run([sys.executable, "-c", "import kmock; print(kmock.__version__)"])
    return {"commit": commit(), "sluice": run([str(binary), "--version"]) if binary else "?",
            "nats_server": nats_version(nats_server), "kmock": kmock,
            "python": sys.version.split()[0]}


# ---------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["latency", "scale"], help="run only one of the two measurements")
    ap.add_argument("--changes", type=int, default=20, help="trustedNetworks changes (default 20)")
    ap.add_argument("--poll", type=float, default=0.005, help="probe interval after a change, s (default 0.005)")
    ap.add_argument("--change-timeout", type=float, default=10,
                    help="longest wait for one change's SMTP decision, s (default 10; x6 for the scale change)")
    ap.add_argument("--policies", type=int, default=1000, help="RelayPolicies of the scale test (default 1000)")
    ap.add_argument("--users-per-policy", type=int, default=10, help="users in each (default 10)")
    ap.add_argument("--threads", type=int, default=4, help="connections creating the policies (default 4)")
    ap.add_argument("--scale-timeout", type=float, default=600,
                    help="longest wait from the operator's start to every status Ready, s (default 600)")
    ap.add_argument("--stuck-timeout", type=float, default=30,
                    help="give up the scale test when, this long after the first failure, every snapshot "
                         "write has failed and none is in force, s (default 30)")
    ap.add_argument("--nats-max-payload",
                    help="nats-server max_payload (e.g. 8MB) from a configuration file; default: "
                         "nats-server's own, 1 MiB")
    ap.add_argument("--list-interval", type=float, default=1.0,
                    help="how often the policies are listed while waiting for their statuses, s (default 1)")
    ap.add_argument("--skip-build", action="store_true", help="use the binary already built")
    ap.add_argument("--binary", type=Path, help="the sluice binary (default: target/release/sluice)")
    ap.add_argument("--json", type=Path, help="also write every figure to this file as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    ap.add_argument("--nats-server", default=shutil.which("nats-server") or "nats-server")
    args = ap.parse_args()
    if not (1 <= args.changes <= 1000 and 1 <= args.policies <= 100_000 and 1 <= args.users_per_policy <= 100):
        raise BenchError("--changes, --policies or --users-per-policy out of range")

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    if not shutil.which(args.nats_server):
        raise BenchError(f"{args.nats_server} not found (nats-server on PATH, or --nats-server)")
    if subprocess.run([sys.executable, "-c", "import kmock"], capture_output=True).returncode != 0:
        raise BenchError("kmock is not installed for the emulator: scripts/install-test-deps")
    binary = args.binary.resolve() if args.binary else None
    if binary is None:
        if not args.skip_build:
            build("--bin", "sluice")
        binary = cargo_target_dir() / "release" / "sluice"
    if not binary.exists():
        raise BenchError(f"{binary} not built (run without --skip-build)")

    workdir = Path(tempfile.mkdtemp(prefix="sluice-operator-"))
    log(f"work directory {workdir} (logs)")
    res: dict = {"versions": versions(binary, args.nats_server), "binary": str(binary),
                 "machine": {"cpus": os.cpu_count(), "kernel": os.uname().release,
                             "loadavg_at_start": os.getloadavg()}}
    completed = False
    errors: list[str] = []  # what makes the run invalid
    failed: dict[str, str] = {}
    try:
        for key, title, run in (
                ("latency", "a trustedNetworks change to the SMTP decision", latency),
                ("scale", f"{args.policies} policies, {args.policies * args.users_per_policy} users", scale)):
            if args.only not in (None, key):
                continue
            log(f"--- {key}: {title}")
            try:
                res[key] = run(args, binary, workdir)
            except BenchError as e:  # the other measurement may still be made
                log(f"{key}: {e}")
                failed[key] = str(e)
                errors.append(f"{key}: {e}")
        completed = True
    finally:
        stop_all()
        if not completed:
            log(f"logs kept in {workdir}")
    res["failed"] = failed
    lat, sc = res.get("latency"), res.get("scale")
    if lat:
        errors += [f"latency: {k} exited with {v}" for k, v in lat["exit_codes"].items() if v not in (0, None)]
    if sc:
        if sc["exit_code"] not in (0, None):
            errors.append(f"scale: the operator exited with {sc['exit_code']}")
        if sc["refused"]:
            errors.append(f"scale: {sc['refused']:.0f} policies refused")
    res["machine"]["loadavg_at_end"] = os.getloadavg()
    v = res["versions"]
    la0, la1 = res["machine"]["loadavg_at_start"], res["machine"]["loadavg_at_end"]
    print()
    print(f"Sluice operator benchmark, commit {v['commit']} ({v['sluice']}, {binary.parent.name} build), "
          f"{v['nats_server']}, kmock {v['kmock']}, Python {v['python']}, {res['machine']['cpus']} CPUs, "
          f"load average {la0[0]:.2f} at start, {la1[0]:.2f} at end; nats-server max_payload "
          + (f"{args.nats_max_payload} (--nats-max-payload)" if args.nats_max_payload else "default (1 MiB)"))
    if la0[0] > 0.5 * (os.cpu_count() or 1):
        print("(the machine was busy with other work at the start: figures may be high; run again when idle)")
    print()
    print(table(summary(res)))
    print()
    if lat:
        print(f"latency: probe every {args.poll * 1000:.0f} ms, a new SMTP session each (EHLO, MAIL, RCPT "
              f"to a foreign domain); the clock starts when the API has answered the merge patch")
    if sc:
        print(f"scale: {sc['policies']} policies x {args.users_per_policy} users (passwordHash, one argon2id "
              f"hash), one relay domain each; emulator VmRSS {mib(sc['emulator_rss_kib'][0])} after "
              f"creating them, {mib(sc['emulator_rss_kib'][1])} after the start-up")
    for name, why in failed.items():
        print(f"{name}: NOT MEASURED: {why}")
    for name, r in (("latency", lat), ("scale", sc)):
        if r and r["operator_readyz"]["ready_s"] is None:
            print(f"{name}: the operator's /readyz never answered 200 (last: {r['operator_readyz']['last']}); "
                  "the figures do not depend on it")
    for name, probs in {**({f"latency {k}": p for k, p in lat["log_problems"].items()} if lat else {}),
                        **({"scale operator": sc["log_problems"]} if sc else {})}.items():
        print(f"{name} log: " + (f"{len(probs)} WARN/ERROR lines, first ones:" if probs else "no WARN/ERROR lines"))
        for line in probs[:5]:
            print("    " + line[:300])
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str) + "\n")
        print(f"\nfigures written to {args.json}")
    if errors:
        print("\nINVALID RUN:\n  " + "\n  ".join(errors))
        print(f"(logs kept in {workdir})")
        return 1
    if args.keep:
        print(f"(logs kept in {workdir})")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    run_main(main)
