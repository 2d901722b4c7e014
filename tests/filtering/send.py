"""One SMTP transaction with smtplib for tests/filtering.rs. Argument: JSON with port,
source (the client's loopback address), from, to, file (the message), and optionally
user and password (then STARTTLS without certificate checks, and AUTH). Prints the
reply to the end of the content as JSON [code, text]; [code, text] of MAIL or RCPT when
one of them was refused."""

import json
import smtplib
import ssl
import sys

a = json.loads(sys.argv[1])
s = smtplib.SMTP("127.0.0.1", a["port"], source_address=(a["source"], 0), timeout=30)
s.ehlo("client.test")
if a.get("user"):
    s.starttls(context=ssl._create_unverified_context())
    s.ehlo("client.test")
    s.login(a["user"], a["password"])
with open(a["file"], "rb") as f:
    content = f.read()
out = None
code, text = s.mail(a["from"])
if code != 250:
    out = [code, text.decode()]
if out is None:
    code, text = s.rcpt(a["to"])
    if code not in (250, 251):
        out = [code, text.decode()]
if out is None:
    code, text = s.data(content)
    out = [code, text.decode()]
try:
    s.quit()
except smtplib.SMTPServerDisconnected:
    pass
print(json.dumps(out))
