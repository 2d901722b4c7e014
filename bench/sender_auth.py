#!/usr/bin/env python3
"""Sluice sender-authentication benchmark: the relay's CPU per message for verifying
inbound mail (SPF, DKIM and DMARC with a warm DNS cache) and for signing outbound mail
(DKIM, RSA-2048 and Ed25519), each against the same acceptance load without it, in one
run (issue 12, "Performance").

    python3 bench/sender_auth.py            # build, measure, print the summary table

What it does (see bench/README.md, "Sender-authentication benchmark"):

1. `cargo build --release --bin sluice`.
2. An RSA-2048 and an Ed25519 key (`sluice dkim keygen`), and an authoritative DNS server
   for `bench.example` on loopback (`authdns.py`): SPF, DMARC p=reject and both DKIM
   key records. It counts the questions it answers.
3. Two 4 KiB messages from sender@bench.example: `plain.eml`, and `signed.eml`, the same
   DKIM-signed once with the RSA key by dkimpy.
4. Ceilings: each message's load straight into smtp-sink.
5. Each variant on a fresh `sluice standalone` (delivery off, `delivery.nameserver` the
   DNS server): a warm-up of 500 messages, then the measured load, `smtp-source -s 20
   -m 20000 -F FILE` (one connection per message), msg/s from the wall clock, the
   relay's CPU from /proc, the DNS questions asked; a sample of the queued messages is
   read back and checked (our Authentication-Results says pass, signatures verify with
   dkimpy). `--rounds` rounds, alternating the order; medians.

Variants: baseline-untrusted (a relay domain, no trusted network, no filter; the signed
message), verify (the same with `filters: [{senderAuth: {}}]`), baseline-trusted
(127.0.0.1 trusted; the plain message), sign-rsa and sign-ed25519 (trusted, with a
`signing:` section holding one key; `--skip-signing` leaves them out).

Loopback only; every wait is bounded; every child process is stopped on exit. Needs
Python 3.11, dnspython and dkimpy (with PyNaCl) as `scripts/install-test-deps`
installs them, `openssl`, and Postfix's smtp-source and smtp-sink. A benchmark for
people, never a timed test.
"""

from __future__ import annotations

import argparse
import email.policy
import json
import os
import shutil
import signal
import subprocess
import tempfile
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

import dkim

from authdns import DnsServer, Zone, make_key, sluice_keygen
from common import (
    CLK_TCK, BenchError, Relay, _on_signal, build, cargo_target_dir, cleanup_done, commit,
    cpu_seconds, free_port, labeled, launch_relay, log, log_problems, on_cleanup, run_main,
    stop_all,
)
from filter import Load, ceiling, filter_seconds, median, run_sources, table, verdicts

DOMAIN = "bench.example"
SENDER = f"sender@{DOMAIN}"
RECIPIENT = "rcpt@relay.bench.test"
HELO = f"mta.{DOMAIN}"
HOSTNAME = "relay.bench.test"  # the relay's: the authserv-id of its Authentication-Results
SELECTORS = {"rsa": "rsa", "ed25519": "ed"}
SECRET = "dkim-bench"  # keySecretRef.name: the directory under secretsDir


@dataclass(frozen=True)
class Variant:
    name: str
    trusted: bool
    verify: bool
    sign: str | None  # "rsa", "ed25519"
    message: str  # "signed", "plain"
    baseline: str | None


VARIANTS = [
    Variant("baseline-untrusted", False, False, None, "signed", None),
    Variant("verify", False, True, None, "signed", "baseline-untrusted"),
    Variant("baseline-trusted", True, False, None, "plain", None),
    Variant("sign-rsa", True, False, "rsa", "plain", "baseline-trusted"),
    Variant("sign-ed25519", True, False, "ed25519", "plain", "baseline-trusted"),
]

CONFIG = """\
hostname: {hostname}
listeners:
  - {{ name: smtp, address: "127.0.0.1:{smtp}", kind: relay }}
spool: spool
admin: "127.0.0.1:{admin}"
policies: [policy.yaml]
limits:
  maxConnections: 20000
  maxConnectionsPerIp: 20000
  shutdownGrace: 5s
# Acceptance only: queue, do not deliver. The ingress asks this name server for sender
# authentication, and reads signing keys from secretsDir.
delivery:
  enabled: false
  nameserver: "127.0.0.1:{dns}"
  secretsDir: "{secrets}"
log: text
"""


def policy_yaml(v: Variant) -> str:
    lines = [
        "apiVersion: sluice.dev/v1alpha1",
        "kind: RelayPolicy",
        "metadata: {name: bench, namespace: mail}",
        "spec:",
        '  relayDomains: ["relay.bench.test"]',
    ]
    if v.trusted:
        lines.append('  trustedNetworks: ["127.0.0.1/32"]')
    if v.verify:
        lines += ["  filters:", "    - senderAuth: {}"]
    if v.sign:
        lines += ["  signing:", "    dkim:", f"      - domain: {DOMAIN}",
                  f"        selector: {SELECTORS[v.sign]}",
                  f"        keySecretRef: {{name: {SECRET}, key: {v.sign}.pem}}"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# Keys, zone, messages.

def make_keys(d: Path, binary: Path, tool: str) -> dict:
    """Both keys under d/NAME/ALG.pem, as the relay reads them from its secretsDir."""
    (d / SECRET).mkdir(parents=True)
    keys = {}
    for alg, sel in SELECTORS.items():
        path = d / SECRET / f"{alg}.pem"
        try:
            keys[alg] = (sluice_keygen(binary, alg, DOMAIN, sel, path) if tool == "sluice"
                         else make_key(alg, path))
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            raise BenchError(f"making the {alg} key: {e}") from e
    for alg, k in keys.items():
        log(f"key {alg}: {k.pem}, record of {len(k.record)} octets")
    return keys


def make_zone(keys: dict) -> Zone:
    spf = "v=spf1 ip4:127.0.0.1 -all"
    # The server speaks for the whole reserved TLD `example.` (RFC 2606), as the DNS would
    # answer a resolver: DMARC's tree walk (RFC 9989 4.10.1) also asks `_dmarc.example`,
    # which gets an NXDOMAIN it can cache, not a REFUSED.
    zone = (Zone("example")
            .txt(DOMAIN, spf)
            .txt(HELO, spf)  # the HELO identity is checked too (RFC 7208 2.3)
            .txt(f"_dmarc.{DOMAIN}", "v=DMARC1; p=reject"))
    for alg, sel in SELECTORS.items():
        zone.txt(f"{sel}._domainkey.{DOMAIN}", keys[alg].record)
    return zone


def dnsfunc(zone: Zone):
    """dkimpy's DNS hook, answered from the zone itself (no lookup on the network)."""
    def get_txt(name: bytes, timeout: float = 5):
        value = zone.value(name.decode().rstrip("."))
        return value.encode() if value is not None else None
    return get_txt


def plain_message(size: int) -> bytes:
    m = EmailMessage(policy=email.policy.SMTP)
    m["From"] = f"Bench Sender <{SENDER}>"
    m["To"] = f"Recipient <{RECIPIENT}>"
    m["Subject"] = "Minutes of the Tuesday meeting"
    m["Date"] = format_datetime(datetime.now().astimezone())
    m["Message-ID"] = make_msgid(domain=DOMAIN)
    line = "The meeting agreed to move the review to Thursday and to keep the old schedule.\n"
    m.set_content(line * max(1, size // len(line)))
    return m.as_bytes()


def write_messages(args, d: Path, keys: dict, zone: Zone) -> dict[str, Path]:
    """plain.eml and signed.eml (RSA, relaxed/relaxed, dkimpy's default header list),
    with LF line ends: smtp-source sends each line with CRLF, which is what was signed."""
    d.mkdir()
    plain = plain_message(args.size)
    sig = dkim.sign(plain, SELECTORS["rsa"].encode(), DOMAIN.encode(), keys["rsa"].pem.read_bytes(),
                    canonicalize=(b"relaxed", b"relaxed"))
    signed = sig + plain
    if not dkim.verify(signed, dnsfunc=dnsfunc(zone)):
        raise BenchError("dkimpy cannot verify the message it signed")
    files = {"plain": d / "plain.eml", "signed": d / "signed.eml"}
    for kind, data in (("plain", plain), ("signed", signed)):
        files[kind].write_bytes(data.replace(b"\r\n", b"\n"))
        log(f"message {kind}: {files[kind]} ({files[kind].stat().st_size} bytes)")
    return files


def load(args, name: str, path: Path, messages: int) -> Load:
    cmd = [args.smtp_source, "-s", str(args.sessions), "-m", str(messages), "-F", str(path),
           "-f", SENDER, "-t", RECIPIENT, "-M", HELO]
    return Load(name, messages, [cmd])


# ---------------------------------------------------------------------------------------
# One variant on a fresh relay.

def start_relay(binary: Path, workdir: Path, name: str, v: Variant, dns_port: int,
                secrets: Path) -> Relay:
    d = workdir / name
    d.mkdir()
    (d / "policy.yaml").write_text(policy_yaml(v))
    smtp, admin = free_port(), free_port()
    while admin == smtp:
        admin = free_port()
    (d / "sluice.yaml").write_text(CONFIG.format(hostname=HOSTNAME, smtp=smtp, admin=admin,
                                                 dns=dns_port, secrets=secrets))
    return launch_relay(binary, d, name, smtp, admin)


def measure(args, binary: Path, workdir: Path, v: Variant, round_no: int, files: dict[str, Path],
            dns: DnsServer, zone: Zone, secrets: Path) -> dict:
    name = f"{v.name}-r{round_no + 1}"
    relay = start_relay(binary, workdir, name, v, dns.port, secrets)
    try:
        q_start = dns.counts()
        warm = run_sources(load(args, "warm-up", files[v.message], args.warmup), relay.smtp,
                           relay.dir, f"{name}-warmup", args.source_timeout) if args.warmup else None
        m0, cpu0, q0 = relay.metrics(), cpu_seconds(relay.pid), dns.counts()
        run = run_sources(load(args, v.message, files[v.message], args.messages), relay.smtp,
                          relay.dir, name, args.source_timeout)
        cpu1, m1, q1 = cpu_seconds(relay.pid), relay.metrics(), dns.counts()
        samples = sample_queue(relay.admin, args.samples)
    finally:
        relay.shutdown()
    n = args.messages
    cpu = cpu1 - cpu0
    asked = q1.by_question - q0.by_question
    r = dict(run)
    r.update({
        "variant": v.name,
        "message": v.message,
        "messages": n,
        "warmup_s": warm["wall_s"] if warm else None,
        "accepted": m1.get("sluice_messages_accepted_total", 0) - m0.get("sluice_messages_accepted_total", 0),
        "relay_cpu_s": cpu,
        "cpu_ms_per_msg": cpu * 1000 / n,
        "cpu_cores_busy": cpu / run["wall_s"],
        "dns_warmup_questions": dict(q0.by_question - q_start.by_question),
        "dns_questions": dict(asked),
        "dns_per_msg": sum(asked.values()) / n,
        "dns_tcp": q1.tcp - q0.tcp,
        "verdicts": verdicts(m1, m0),
        "rejected": labeled(m1, "sluice_messages_rejected_total"),
        "signatures": {k: v1 - m0.get(k, 0) for k, v1 in labeled(m1, "sluice_dkim_signatures_total").items()},
        "filter_seconds": filter_seconds(m1, m0),
        "samples": len(samples),
        "sample_problems": [p for s in samples for p in check_message(v, s, zone)],
        "relay_exit_code": relay.exit_code,
        "relay_log_problems": log_problems(relay.log_path),
        "relay_log": str(relay.log_path),
    })
    r["errors"] = run_errors(name, v, r)
    if not r["errors"] and not args.keep:
        shutil.rmtree(relay.dir / "spool", ignore_errors=True)
    log(f"{name}: {r['msgs_per_s']:.0f} msg/s, {r['cpu_ms_per_msg']:.3f} ms CPU/msg, "
        f"{r['dns_per_msg']:.4f} DNS questions/msg")
    return r


def sample_queue(admin: int, count: int) -> list[bytes]:
    """`count` queued messages spread over the queue, read back through the admin API."""
    def get(path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}{path}", timeout=60) as resp:
            return json.loads(resp.read())
    entries = get("/queue")
    if not entries or count <= 0:
        return []
    step = max(1, len(entries) // count)
    ids = [e["envelope"]["id"] for e in entries[::step][:count]]
    return [get(f"/queue/{i}")["message"].encode() for i in ids]


def header_fields(message: bytes) -> list[tuple[str, str]]:
    """(name, unfolded value) of the header section, in order."""
    head = message.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode(errors="replace")
    fields: list[tuple[str, str]] = []
    for line in head.split("\n"):
        if line[:1] in (" ", "\t") and fields:
            fields[-1] = (fields[-1][0], fields[-1][1] + " " + line.strip())
        elif ":" in line:
            n, val = line.split(":", 1)
            fields.append((n.strip(), val.strip()))
    return fields


def check_message(v: Variant, message: bytes, zone: Zone) -> list[str]:
    """What is wrong with one queued message for this variant: our results (verify: one
    field, spf, dkim and dmarc pass; otherwise none) and the DKIM signatures (every one
    verifies with dkimpy; the one expected is there)."""
    problems = []
    fields = header_fields(message)
    ours = [val for n, val in fields if n.lower() == "authentication-results"
            and val.lower().startswith(HOSTNAME + ";")]
    if v.verify:
        if len(ours) != 1:
            problems.append(f"{len(ours)} Authentication-Results of ours, not 1")
        for want in ("spf=pass", "dkim=pass", "dmarc=pass"):
            if ours and want not in ours[0]:
                problems.append(f"{want} not in {ours[0]!r}")
    elif ours:
        problems.append(f"an Authentication-Results of ours without the check: {ours[0]!r}")
    sigs = [val for n, val in fields if n.lower() == "dkim-signature"]
    selectors = [dict(t.strip().split("=", 1) for t in s.replace(" ", "").split(";") if "=" in t).get("s")
                 for s in sigs]
    want = []
    if v.sign:
        want.append(SELECTORS[v.sign])
    if v.message == "signed":
        want.append(SELECTORS["rsa"])
    if sorted(selectors) != sorted(want):
        problems.append(f"DKIM selectors {selectors}, expected {want}")
    crlf = message if b"\r\n" in message else message.replace(b"\n", b"\r\n")
    d = dkim.DKIM(crlf)
    for i in range(len(sigs)):
        try:
            ok = d.verify(idx=i, dnsfunc=dnsfunc(zone))
        except dkim.DKIMException as e:
            ok = False
            problems.append(f"signature {i} (s={selectors[i]}): {e}")
        if not ok:
            problems.append(f"signature {i} (s={selectors[i]}) does not verify with dkimpy")
    return problems


def run_errors(name: str, v: Variant, r: dict) -> list[str]:
    """What makes a run invalid."""
    n = r["messages"]
    errors = []
    if r["accepted"] != n:
        errors.append(f"{name}: the relay accepted {r['accepted']:.0f} messages, not {n}")
    if r["rejected"]:
        errors.append(f"{name}: rejections {r['rejected']}")
    for key, count in r["verdicts"].items():
        if 'result="accept"' not in key:
            errors.append(f"{name}: {count:.0f} verdicts {key}")
    checked = sum(c for k, c in r["verdicts"].items() if 'check="sender-auth"' in k)
    if checked != (n if v.verify else 0):
        errors.append(f"{name}: sender-auth verdicts {checked:.0f}, expected {n if v.verify else 0}")
    signed = r["signatures"].get('sluice_dkim_signatures_total{result="signed"}', 0)
    if v.sign and signed != n:
        errors.append(f"{name}: {signed:.0f} messages signed (sluice_dkim_signatures_total), not {n}")
    if not v.sign and signed:
        errors.append(f"{name}: {signed:.0f} messages signed without a signing key")
    if r["samples"] == 0:
        errors.append(f"{name}: no queued message could be read back")
    errors += [f"{name}: queued message: {p}" for p in r["sample_problems"]]
    if r["relay_exit_code"] not in (0, None):
        errors.append(f"{name}: the relay exited with {r['relay_exit_code']}")
    return errors


def rounds(runs: list[dict]) -> dict:
    means = [r["filter_seconds"]["mean_ms"] for r in runs if r["filter_seconds"].get("count")]
    return {
        "msgs_per_s": median([r["msgs_per_s"] for r in runs]),
        "cpu_ms_per_msg": median([r["cpu_ms_per_msg"] for r in runs]),
        "cpu_cores_busy": median([r["cpu_cores_busy"] for r in runs]),
        "dns_per_msg": median([r["dns_per_msg"] for r in runs]),
        "filter_mean_ms": median(means) if means else None,
        "relay_log_problems": [line for r in runs for line in r["relay_log_problems"]],
        "rounds": runs,
    }


# ---------------------------------------------------------------------------------------
# Summary.

def summary(res: dict) -> str:
    rows = []
    for kind, c in res.get("ceiling", {}).items():
        rows.append((f"ceiling ({kind}.eml -> smtp-sink)", f"{c['msgs_per_s']:.0f}", "", "", "", "", "", ""))
    variants = res.get("variants", {})
    for name, r in variants.items():
        base = variants.get(next(v.baseline for v in VARIANTS if v.name == name) or "")
        diff = ""
        if base:
            d = r["cpu_ms_per_msg"] - base["cpu_ms_per_msg"]
            diff = (f"{d:+.3f} ms ({d / base['cpu_ms_per_msg']:+.0%}), "
                    f"msg/s {r['msgs_per_s'] / base['msgs_per_s']:.0%}")
        fm = r["filter_mean_ms"]
        rows.append((name, f"{r['msgs_per_s']:.0f}", f"{r['cpu_ms_per_msg']:.3f}", f"{r['cpu_cores_busy']:.2f}",
                     diff, f"{fm:.3f}" if fm is not None else "", f"{r['dns_per_msg']:.4f}",
                     " ".join(f"{x['msgs_per_s']:.0f}/{x['cpu_ms_per_msg']:.3f}" for x in r["rounds"])))
    return table(rows, ("variant", "msg/s", "CPU ms/msg", "cores", "vs baseline (CPU, msg/s)",
                        "filter mean ms", "DNS q/msg", "rounds msg/s / CPU ms"))


def dns_lines(res: dict) -> list[str]:
    out = []
    for name, r in res.get("variants", {}).items():
        warm: dict = {}
        meas: dict = {}
        for x in r["rounds"]:
            for k, c in x["dns_warmup_questions"].items():
                warm[k] = warm.get(k, 0) + c
            for k, c in x["dns_questions"].items():
                meas[k] = meas.get(k, 0) + c
        if warm or meas:
            fmt = lambda d: ", ".join(f"{k} x{c}" for k, c in sorted(d.items())) or "none"  # noqa: E731
            out.append(f"  {name} ({len(r['rounds'])} rounds): warm-up: {fmt(warm)}; measured: {fmt(meas)}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=20000, help="measured messages per run: smtp-source -m (default 20000)")
    ap.add_argument("--sessions", type=int, default=20, help="smtp-source -s (default 20)")
    ap.add_argument("--size", type=int, default=4096, help="the message body's size in bytes (default 4096)")
    ap.add_argument("--warmup", type=int, default=500, help="messages sent before each measured run, same load (default 500)")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each variant, alternating the order; medians (default 3)")
    ap.add_argument("--samples", type=int, default=10, help="queued messages read back and checked per run (default 10)")
    ap.add_argument("--skip-signing", action="store_true",
                    help="skip sign-rsa and sign-ed25519 (for a sluice whose RelayPolicy has no `signing:`)")
    ap.add_argument("--keygen", choices=("sluice", "openssl"), default="sluice",
                    help="make the keys with `sluice dkim keygen` (default; its record is checked "
                         "against openssl's) or `openssl genpkey` (a sluice without keygen)")
    ap.add_argument("--only", action="append", default=[], metavar="VARIANT",
                    help="run only these variants (repeatable): " + ", ".join(v.name for v in VARIANTS))
    ap.add_argument("--source-timeout", type=float, default=600, help="longest smtp-source run, s")
    ap.add_argument("--skip-build", action="store_true", help="use the binary already built")
    ap.add_argument("--skip-ceiling", action="store_true", help="skip the smtp-sink ceilings")
    ap.add_argument("--json", type=Path, help="also write every figure to this file as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, spools, logs)")
    ap.add_argument("--smtp-source", default=shutil.which("smtp-source") or "/usr/sbin/smtp-source")
    ap.add_argument("--smtp-sink", default=shutil.which("smtp-sink") or "/usr/sbin/smtp-sink")
    args = ap.parse_args()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    for tool in (args.smtp_source, args.smtp_sink):
        if not os.access(tool, os.X_OK):
            raise BenchError(f"{tool} not found: apt-get install postfix")
    if not shutil.which("openssl"):
        raise BenchError("openssl not found: apt-get install openssl")
    unknown = set(args.only) - {v.name for v in VARIANTS}
    if unknown:
        raise BenchError(f"unknown variants {sorted(unknown)}")
    chosen = [v for v in VARIANTS if (not args.only or v.name in args.only) and (not args.skip_signing or not v.sign)]
    if not chosen:
        raise BenchError("no variant left to run")

    if not args.skip_build:
        build("--bin", "sluice")
    binary = cargo_target_dir() / "release" / "sluice"
    if not binary.exists():
        raise BenchError(f"{binary} not built (run without --skip-build)")

    workdir = Path(tempfile.mkdtemp(prefix="sluice-auth-bench-"))
    log(f"work directory {workdir} (keys, messages, spools, logs)")
    res: dict = {"machine": {"cpus": os.cpu_count(), "clk_tck": CLK_TCK, "kernel": os.uname().release,
                             "loadavg_at_start": os.getloadavg()},
                 "commit": commit(), "signing_run": not args.skip_signing,
                 "load": {"messages": args.messages, "sessions": args.sessions, "warmup": args.warmup,
                          "rounds": args.rounds}}
    errors: list[str] = []
    completed = False
    dns_server = None
    try:
        secrets = workdir / "secrets"
        keys = make_keys(secrets, binary, args.keygen)
        zone = make_zone(keys)
        res["keys"] = {alg: {"selector": SELECTORS[alg], "record_octets": len(k.record),
                             "tool": "sluice dkim keygen" if args.keygen == "sluice" else "openssl genpkey"}
                       for alg, k in keys.items()}
        files = write_messages(args, workdir / "messages", keys, zone)
        res["messages"] = {k: {"path": str(p), "bytes": p.stat().st_size} for k, p in files.items()}
        dns_server = DnsServer(zone)
        on_cleanup(dns_server.close)
        log(f"DNS server for {DOMAIN}: 127.0.0.1:{dns_server.port} (UDP and TCP)")
        if not args.skip_ceiling:
            kinds = sorted({v.message for v in chosen})
            res["ceiling"] = {k: ceiling(args, load(args, k, files[k], args.messages), workdir) for k in kinds}
        runs: dict[str, list[dict]] = {v.name: [] for v in chosen}
        for i in range(args.rounds):
            # Alternate the order, so that a drift of the machine's load weighs on all alike.
            for v in (chosen if i % 2 == 0 else list(reversed(chosen))):
                r = measure(args, binary, workdir, v, i, files, dns_server, zone, secrets)
                runs[v.name].append(r)
                errors += r["errors"]
                if not dns_server.alive():
                    raise BenchError("the DNS server thread died")
        res["variants"] = {name: rounds(rs) for name, rs in runs.items()}
        c = dns_server.counts()
        res["dns_total"] = {"questions": c.total(), "udp": c.udp, "tcp": c.tcp, "truncated": c.truncated,
                            "malformed": c.malformed}
        completed = True
    finally:
        if dns_server is not None:
            dns_server.close()
            cleanup_done(dns_server.close)
        stop_all()
        if not completed:
            log(f"keys, configs, spools and logs kept in {workdir}")
        elif not args.keep and not errors:
            shutil.rmtree(workdir, ignore_errors=True)

    res["machine"]["loadavg_at_end"] = os.getloadavg()
    la = res["machine"]["loadavg_at_start"]
    print()
    print(f"Sluice sender-authentication benchmark, commit {res['commit']}, {res['machine']['cpus']} CPUs, "
          f"load average {la[0]:.2f} at start, {res['machine']['loadavg_at_end'][0]:.2f} at end")
    if la[0] > 0.5 * (os.cpu_count() or 1):
        print("(the machine was busy with other work at the start: figures may be low; run again when idle)")
    print(f"{args.messages} messages over {args.sessions} sessions per run, one connection each, "
          f"after {args.warmup} warm-up; medians of {args.rounds} rounds; CPU = the relay's, /proc")
    print(summary(res))
    if args.skip_signing:
        print("(sign-rsa and sign-ed25519 not run: --skip-signing)")
    print("\nDNS questions answered, by name and type, over all rounds:")
    print("\n".join(dns_lines(res)) or "  none")
    noisy = [(name, r["relay_log_problems"]) for name, r in res.get("variants", {}).items() if r["relay_log_problems"]]
    print("\nrelay logs: " + ("no WARN/ERROR lines" if not noisy else ""))
    for name, lines in noisy:
        print(f"  {name}: {len(lines)} WARN/ERROR lines, first: {lines[0]}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str) + "\n")
        print(f"\nfigures written to {args.json}")
    if errors:
        print("\nINVALID RUN:\n  " + "\n  ".join(errors[:50]))
        print(f"(keys, configs, spools and logs kept in {workdir})")
        return 1
    return 0


if __name__ == "__main__":
    run_main(main)
