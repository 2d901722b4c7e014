"""Verifies every DKIM-Signature of a message with dkimpy, an implementation
independent of the relay's (tests/dkim_signing.rs). Argument: JSON {name: TXT value}
of the key records (no DNS on this side). The message on stdin. Prints a JSON list,
one {d, s, a, ok} per signature, in header order."""

import json
import re
import sys

import dkim

records = {k.lower().rstrip("."): v for k, v in json.loads(sys.argv[1]).items()}


def dnsfunc(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    value = records.get(name.lower().rstrip("."))
    return value.encode() if value is not None else None


message = sys.stdin.buffer.read()
d = dkim.DKIM(message)
headers = [v for (n, v) in d.headers if n.lower() == b"dkim-signature"]
out = []
for i, value in enumerate(headers):
    text = re.sub(rb"\s+", b"", value).decode()
    tags = dict(t.split("=", 1) for t in text.split(";") if "=" in t)
    ok = dkim.DKIM(message).verify(idx=i, dnsfunc=dnsfunc)
    out.append({"d": tags.get("d"), "s": tags.get("s"), "a": tags.get("a"), "ok": bool(ok)})
print(json.dumps(out))
