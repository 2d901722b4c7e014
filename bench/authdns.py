"""An authoritative DNS server on loopback for the sender-authentication benchmark
(`sender_auth.py`), and the DKIM keys it publishes.

The relay asks it through `delivery.nameserver`, as it would ask a recursive resolver:
every question gets an authoritative answer from one zone held in memory (TXT records,
NODATA and NXDOMAIN with the zone's SOA, so that the relay's resolver can cache the
negative answers too); names outside the zone are REFUSED. UDP, and TCP for answers that
do not fit the client's UDP payload size (the answer is then sent truncated, TC set).
Every question answered is counted by name and type, which is how the benchmark tells
how many lookups a message costs with a warm cache.

Messages are parsed and built with dnspython (2.x). Keys come from `sluice dkim keygen`,
whose printed record is checked against the one the `openssl` command derives from the
private key, or from `openssl genpkey` itself; their public halves go into the zone as
RFC 6376 / RFC 8463 key records.
"""

from __future__ import annotations

import base64
import re
import select
import socket
import struct
import subprocess
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset

# The most octets of one character-string of a TXT record (RFC 1035 3.3); longer values
# are split into several strings, which a DKIM verifier joins (RFC 6376 3.6.2.2).
TXT_STRING_MAX = 255
# Long enough that nothing expires during a run: the cache stays warm once filled.
TTL = 3600
# The largest TCP message read (two length octets say how long it is).
TCP_MAX = 65535
TCP_TIMEOUT = 2.0


def txt_strings(value: str) -> list[bytes]:
    data = value.encode()
    return [data[i:i + TXT_STRING_MAX] for i in range(0, len(data), TXT_STRING_MAX)] or [b""]


class Zone:
    """One zone's TXT records, by name, and its SOA for negative answers."""

    def __init__(self, origin: str, ttl: int = TTL):
        self.origin = dns.name.from_text(origin)
        self.ttl = ttl
        self.records: dict[dns.name.Name, list[str]] = {}
        soa = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SOA,
                                  f"ns.{origin}. hostmaster.{origin}. 1 {ttl} 600 86400 {ttl}")
        self.soa = dns.rrset.from_rdata(self.origin, ttl, soa)

    def txt(self, name: str, value: str) -> "Zone":
        n = dns.name.from_text(name)
        if not n.is_subdomain(self.origin):
            raise ValueError(f"{name} is outside the zone {self.origin}")
        self.records.setdefault(n, []).append(value)
        return self

    def value(self, name: str) -> str | None:
        """The first TXT value of `name`, its strings joined (what a verifier reads)."""
        values = self.records.get(dns.name.from_text(name))
        return values[0] if values else None

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        q = query.question[0]
        if q.rdclass != dns.rdataclass.IN or not q.name.is_subdomain(self.origin):
            response.flags &= ~dns.flags.AA
            response.set_rcode(dns.rcode.REFUSED)
        elif q.name in self.records and q.rdtype == dns.rdatatype.TXT:
            rdatas = [dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, txt_strings(v))
                      for v in self.records[q.name]]
            response.answer.append(dns.rrset.from_rdata_list(q.name, self.ttl, rdatas))
        elif q.name in self.records or q.name == self.origin:
            response.authority.append(self.soa)  # NODATA
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(self.soa)
        return response


@dataclass
class Counts:
    """Questions answered, by "name TYPE" (REFUSED ones under "refused NAME TYPE")."""
    by_question: Counter
    udp: int = 0
    tcp: int = 0
    truncated: int = 0
    malformed: int = 0

    def total(self) -> int:
        return sum(self.by_question.values())


class DnsServer:
    """The zone served on 127.0.0.1:PORT (UDP and TCP, the same port) by one thread."""

    def __init__(self, zone: Zone):
        self.zone = zone
        self._lock = threading.Lock()
        self._counts = Counts(Counter())
        self._stop = threading.Event()
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", 0))
        self.port = self.tcp.getsockname()[1]
        self.tcp.listen(16)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        self._thread = threading.Thread(target=self._serve, name="authdns", daemon=True)
        self._thread.start()

    def counts(self) -> Counts:
        """A copy of the counters so far."""
        with self._lock:
            c = self._counts
            return Counts(Counter(c.by_question), c.udp, c.tcp, c.truncated, c.malformed)

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self.udp.close()
        self.tcp.close()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.udp, self.tcp], [], [], 0.2)
            if self.udp in ready:
                try:
                    data, peer = self.udp.recvfrom(TCP_MAX)
                except OSError:
                    continue
                reply = self._reply(data, udp=True)
                if reply is not None:
                    try:
                        self.udp.sendto(reply, peer)
                    except OSError:
                        pass
            if self.tcp in ready:
                self._serve_tcp()

    def _serve_tcp(self) -> None:
        """One TCP connection, one question after another until the client closes it
        or is silent for TCP_TIMEOUT (answered inline: TCP is the rare fallback here)."""
        try:
            conn, _ = self.tcp.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(TCP_TIMEOUT)
            try:
                while True:
                    head = _read_exact(conn, 2)
                    if head is None:
                        return
                    data = _read_exact(conn, struct.unpack("!H", head)[0])
                    if data is None:
                        return
                    reply = self._reply(data, udp=False)
                    if reply is None:
                        return
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
            except OSError:
                return

    def _reply(self, data: bytes, udp: bool) -> bytes | None:
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            with self._lock:
                self._counts.malformed += 1
            return None
        response = self.zone.answer(query)
        if udp:
            limit = max(512, query.payload) if query.edns >= 0 else 512
        else:
            limit = TCP_MAX
        wire = response.to_wire(max_size=limit, prefer_truncation=True)
        with self._lock:
            c = self._counts
            for q in query.question:
                key = f"{q.name.to_text(omit_final_dot=True).lower()} {dns.rdatatype.to_text(q.rdtype)}"
                if response.rcode() == dns.rcode.REFUSED:
                    key = "refused " + key
                c.by_question[key] += 1
            if udp:
                c.udp += 1
            else:
                c.tcp += 1
            if dns.message.from_wire(wire).flags & dns.flags.TC:
                c.truncated += 1
        return wire


def _read_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


# ---------------------------------------------------------------------------------------
# DKIM keys.

@dataclass
class DkimKey:
    algorithm: str  # "rsa" or "ed25519"
    pem: Path  # the private key, PEM PKCS#8
    record: str  # the TXT value for {selector}._domainkey.{domain}


def openssl(*argv: str, timeout: float = 60) -> bytes:
    r = subprocess.run(["openssl", *argv], capture_output=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(argv)} failed: {r.stderr.decode(errors='replace').strip()}")
    return r.stdout


def record_from_pem(algorithm: str, path: Path) -> str:
    """The key record of a private key: for RSA `p=` is the SubjectPublicKeyInfo
    (RFC 6376 3.6.1), from `openssl pkey -pubout`; for Ed25519 the raw 32-octet public
    key (RFC 8463 4.2), computed by PyNaCl from the private seed: independent of the
    relay's code, and it reads both PKCS#8 forms (`sluice dkim keygen` wrote ring's v2,
    which OpenSSL 3.0 cannot read, until 85df7e9; v1 since)."""
    if algorithm == "rsa":
        public = openssl("pkey", "-in", str(path), "-pubout", "-outform", "DER")
        k = "rsa"
    else:
        import nacl.signing
        public = bytes(nacl.signing.SigningKey(ed25519_seed(path)).verify_key)
        k = "ed25519"
    return f"v=DKIM1; k={k}; p={base64.b64encode(public).decode()}"


def make_key(algorithm: str, path: Path) -> DkimKey:
    """A new private key at `path` (PEM PKCS#8, mode 0600) from `openssl genpkey`, and
    its DNS record."""
    if algorithm == "rsa":
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(path))
    elif algorithm == "ed25519":
        openssl("genpkey", "-algorithm", "ED25519", "-out", str(path))
    else:
        raise ValueError(algorithm)
    path.chmod(0o600)
    return DkimKey(algorithm, path, record_from_pem(algorithm, path))


# One character-string of a zone file's TXT record: quoted, with backslash escapes.
ZONE_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def sluice_keygen(binary: Path, algorithm: str, domain: str, selector: str, path: Path) -> DkimKey:
    """A new key from `sluice dkim keygen --out PATH`, its record read from the zone line
    the command prints (`NAME IN TXT "..." "..."`, strings joined), and checked against
    the record openssl derives from the same private key."""
    cmd = [str(binary), "dkim", "keygen", "--domain", domain, "--selector", selector,
           "--algorithm", algorithm, "--out", str(path)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    line = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    want = f"{selector}._domainkey.{domain}."
    if not line.lower().startswith(want.lower() + " in txt "):
        raise RuntimeError(f"sluice dkim keygen printed {line!r}, not a TXT record of {want}")
    strings = [re.sub(r"\\(.)", r"\1", m) for m in ZONE_STRING.findall(line)]
    if any(len(x.encode()) > TXT_STRING_MAX for x in strings):
        raise RuntimeError(f"sluice dkim keygen printed a string longer than {TXT_STRING_MAX} octets")
    record = "".join(strings)
    derived = record_from_pem(algorithm, path)
    if record != derived:
        raise RuntimeError(f"sluice dkim keygen's record {record!r} is not the key's ({derived!r})")
    return DkimKey(algorithm, path, record)


# The start of an Ed25519 PKCS#8 key after its outer SEQUENCE header and version:
# algorithm id-Ed25519 (RFC 8410), then privateKey, an OCTET STRING wrapping the seed's.
ED25519_PKCS8 = bytes.fromhex("300506032b657004220420")


def ed25519_seed(path: Path) -> bytes:
    """The 32-octet private seed of an Ed25519 key in PEM PKCS#8, v1 or v2 (RFC 5958,
    which may carry the public key after it)."""
    lines = path.read_text().strip().splitlines()
    if not lines or lines[0] != "-----BEGIN PRIVATE KEY-----":
        raise RuntimeError(f"{path} is not a PEM PKCS#8 private key")
    der = base64.b64decode("".join(x for x in lines[1:] if not x.startswith("-----")))
    # 30 LEN, INTEGER version (02 01 00 or 02 01 01), then the fixed part, then the seed.
    if len(der) < 48 or der[0] != 0x30 or der[2:4] != b"\x02\x01" or der[5:16] != ED25519_PKCS8:
        raise RuntimeError(f"{path} is not an Ed25519 PKCS#8 key")
    return der[16:48]
