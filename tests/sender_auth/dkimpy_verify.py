"""Verifies a message with dkimpy, an implementation independent of the relay's, for
tests/sender_auth.rs. Reads the message on stdin; argv[1] is "dkim" or "arc", argv[2] a
JSON object of DNS TXT records ({"s1._domainkey.example.org": "v=DKIM1; ..."}) that the
verifier is given instead of asking DNS. Prints JSON: {"ok": bool, ...details}."""

import json
import sys

import dkim

mode = sys.argv[1]
records = {k.lower().rstrip("."): v for k, v in json.loads(sys.argv[2]).items()}


def dnsfunc(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    txt = records.get(name.lower().rstrip("."))
    return txt.encode() if txt is not None else None


message = sys.stdin.buffer.read()
if mode == "dkim":
    d = dkim.DKIM(message)
    signatures = [h for h in d.headers if h[0].lower() == b"dkim-signature"]
    results = [d.verify(idx=i, dnsfunc=dnsfunc) for i in range(len(signatures))]
    print(json.dumps({"ok": bool(results) and all(results), "signatures": len(results)}))
elif mode == "arc":
    cv, sets, reason = dkim.arc_verify(message, dnsfunc=dnsfunc)
    print(json.dumps({"ok": cv == dkim.CV_Pass, "cv": cv.decode(), "reason": reason,
                      "sets": len(sets)}))
else:
    sys.exit("mode: dkim or arc")
