#!/usr/bin/env python3
"""AUTH brute force from one client IP: how many password guesses per second one address
gets answered, and whether a real user on another address can still log in meanwhile.

    python3 bench/auth_bruteforce.py --binary target/debug/sluice
    python3 bench/auth_bruteforce.py --binary target/release/sluice --connections 16

What it does:

1. Starts `sluice standalone` in a temporary directory with one submission listener that
   allows AUTH without TLS (`allowPlaintextAuth`, so that the figure is the password
   check, not TLS handshakes), one user `alice` (an argon2id hash made by
   `sluice policy hash-password`, OWASP parameters), and the default `limits`.
2. From `--source-ip` (a loopback address), opens `--connections` parallel SMTP sessions
   with Python's smtplib and sends `AUTH PLAIN` with wrong passwords as fast as the relay
   answers, for `--duration` seconds, all at `alice` (with `--rotate-users`, a new user
   name per guess); each session makes `--guesses-per-session` guesses (default 1: a new
   session per guess, which resets any per-session delay) or fewer if the relay closes
   it.
3. Meanwhile, every few seconds, `alice` logs in with the right password from
   `--legit-ip`, and the time to her 235 is recorded.

It prints the replies by code, the guesses per second (replies 535: each one a password
actually checked), and the legitimate logins. Loopback only; every wait is bounded; the
relay is stopped on exit. Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import base64
import smtplib
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from common import REPO, free_port, launch_relay, log, run_main, stop_all

PASSWORD = "correct horse battery staple"


def write_setup(d: Path, binary: Path, smtp: int, admin: int) -> None:
    hashed = subprocess.run(
        [str(binary), "policy", "hash-password"], input=PASSWORD + "\n",
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()
    (d / "policy.yaml").write_text(f"""apiVersion: sluice.dev/v1alpha1
kind: RelayPolicy
metadata: {{ name: bench, namespace: mail }}
spec:
  localDomains:
    - domain: local.test
      delivery: {{ maildir: {{ path: {d / "maildir"} }} }}
  users:
    - name: alice
      passwordHash: "{hashed}"
      allowedSenders: ["alice@local.test"]
""")
    (d / "sluice.yaml").write_text(f"""hostname: relay.bench
listeners:
  - {{ name: submission, address: "127.0.0.1:{smtp}", kind: submission, allowPlaintextAuth: true }}
spool: spool
admin: "127.0.0.1:{admin}"
policies: [policy.yaml]
delivery: {{ enabled: false }}
""")


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


class Attack:
    """Counts the replies to wrong guesses across all attacking connections."""

    def __init__(self, port: int, source_ip: str, deadline: float, per_session: int,
                 rotate_users: bool):
        self.port, self.source_ip, self.deadline = port, source_ip, deadline
        self.per_session, self.rotate_users = per_session, rotate_users
        self.replies: Counter[int] = Counter()
        self.sessions = 0
        self.lock = threading.Lock()

    def run(self, worker: int) -> None:
        n = 0
        while time.monotonic() < self.deadline:
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=30,
                                  source_address=(self.source_ip, 0)) as s:
                    with self.lock:
                        self.sessions += 1
                    s.ehlo("attacker.bench")
                    for _ in range(self.per_session):
                        if time.monotonic() >= self.deadline:
                            break
                        n += 1
                        user = f"user-{worker}-{n}" if self.rotate_users else "alice"
                        code, _ = s.docmd("AUTH", "PLAIN " + plain(user, f"guess-{worker}-{n}"))
                        with self.lock:
                            self.replies[code] += 1
                        if code == 421:
                            break
            except (smtplib.SMTPException, OSError):
                pass  # the relay closed the session: open another one


def legit_logins(port: int, source_ip: str, deadline: float, every: float) -> list[tuple[int, float]]:
    out = []
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=60, source_address=(source_ip, 0)) as s:
                s.ehlo("user.bench")
                code, _ = s.docmd("AUTH", "PLAIN " + plain("alice", PASSWORD))
        except (smtplib.SMTPException, OSError):
            code = 0
        out.append((code, time.monotonic() - started))
        time.sleep(max(0.0, every - (time.monotonic() - started)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", type=Path, default=REPO / "target" / "debug" / "sluice")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--guesses-per-session", type=int, default=1,
                    help="reconnect after this many guesses (1: a new session per guess, "
                    "which resets any per-session delay)")
    ap.add_argument("--rotate-users", action="store_true",
                    help="a new user name for every guess instead of always alice")
    ap.add_argument("--source-ip", default="127.0.0.3")
    ap.add_argument("--legit-ip", default="127.0.0.4")
    args = ap.parse_args()
    args.binary = args.binary.resolve()
    with tempfile.TemporaryDirectory(prefix="sluice-auth-bench-") as tmp:
        d = Path(tmp)
        smtp, admin = free_port(), free_port()
        write_setup(d, args.binary, smtp, admin)
        relay = launch_relay(args.binary, d, "relay", smtp, admin)
        started = time.monotonic()
        deadline = started + args.duration
        attack = Attack(smtp, args.source_ip, deadline, args.guesses_per_session,
                        args.rotate_users)
        threads = [threading.Thread(target=attack.run, args=(i,), daemon=True)
                   for i in range(args.connections)]
        for t in threads:
            t.start()
        legit = legit_logins(smtp, args.legit_ip, deadline, every=5.0)
        for t in threads:
            t.join(timeout=120)
        elapsed = time.monotonic() - started
        metrics = relay.metrics()
        relay.shutdown()
    checked = attack.replies.get(535, 0)
    print(f"binary: {args.binary}")
    print(f"{args.connections} parallel connections from {args.source_ip} for {elapsed:.1f} s, "
          f"{args.guesses_per_session} guesses per session, {attack.sessions} sessions opened, "
          f"user names: {'a new one per guess' if args.rotate_users else 'alice'}")
    print(f"replies: {dict(sorted(attack.replies.items()))}")
    print(f"guesses checked (535): {checked}, {checked / elapsed:.2f} guesses/s")
    print(f"legitimate logins from {args.legit_ip} (code, seconds): "
          + ", ".join(f"({c}, {s:.2f})" for c, s in legit))
    auth = {k: v for k, v in metrics.items() if k.startswith("sluice_auth")}
    print(f"relay metrics: {auth}")
    return 0


if __name__ == "__main__":
    try:
        run_main(main)
    finally:
        stop_all()
