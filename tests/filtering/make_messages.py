"""Writes the messages of tests/filtering.rs into the directory given, one <case>.eml
each, built with Python's `email` package (policy SMTP: CRLF line ends). Every message
has the Message-ID <case@client.test>, so the test can tell which ones were delivered.
The EICAR test file comes on stdin (it is kept in the Rust test, not in this file)."""

import email.message
import email.policy
import io
import sys
import zipfile
from pathlib import Path

# A PE executable as far as magic bytes go (as in tests/attachments/make_messages.py).
PE = b"MZ" + b"\x90\x00" * 29 + b"\x40\x00\x00\x00" + b"PE\x00\x00" + b"\x4c\x01" + b"\x00" * 64
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 17
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def base(case, text="Hello,\n\nplease find the file attached.\n", sender="sender@client.example"):
    m = email.message.EmailMessage()
    m["From"] = sender
    m["To"] = "rcpt@sink.test"
    m["Subject"] = f"filtering {case}"
    m["Date"] = "Mon, 7 Dec 2026 08:00:00 +0000"
    m["Message-ID"] = f"<{case}@client.test>"
    m.set_content(text)
    return m


def attached(case, data, filename, maintype="application", subtype="octet-stream", cte=None,
             **kw):
    m = base(case, **kw)
    m.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename, cte=cte)
    return m


def zip_of(entries):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries:
            z.writestr(name, data)
    return buf.getvalue()


def cases(eicar):
    yield attached("exe", PE, "setup.exe")
    yield attached("renamed", PE, "report.pdf", "application", "pdf")
    yield attached("double", b"not really", "invoice.pdf.exe")
    yield attached("alice_exe", PE, "setup.exe", sender="alice@local.test")
    yield base("clean", "Hello,\n\n" + "An ordinary line of an ordinary message.\n" * 40)
    yield base("alice_clean", "Hello from Alice.\n", sender="alice@local.test")
    mixed = attached("mixed_js", PDF, "paper.pdf", "application", "pdf")
    mixed.add_attachment(b"alert('hi');\n" * 20, maintype="application", subtype="javascript",
                         filename="evil.js")
    yield mixed
    every = attached("every", PDF, "paper.pdf", "application", "pdf")
    every.add_attachment(PNG, maintype="image", subtype="png", filename="logo.png")
    yield every
    for case, name, data in (("single_exe", "x.exe", PE), ("single_pdf", "x.pdf", PDF)):
        single = email.message.EmailMessage()
        single["From"] = "sender@client.example"
        single["To"] = "rcpt@sink.test"
        single["Subject"] = f"filtering {case}"
        single["Message-ID"] = f"<{case}@client.test>"
        single.set_content(data, maintype="application", subtype="octet-stream", filename=name)
        yield single
    yield base("gtube", f"Hello,\n\n{GTUBE}\n")
    forged = base("gtube_forged", f"Hello,\n\n{GTUBE}\n")
    forged["X-Sluice-Filter"] = "rspamd; accept; forged by the sender"
    yield forged
    forged = base("forged", "Hello,\n\nan ordinary message with a forged header.\n")
    forged["X-Sluice-Filter"] = "rspamd; accept; forged by the sender"
    yield forged
    # Built as tests/clamd.rs builds them: clamd's mail parser does not find EICAR in
    # every message layout (seen with the headers of base(); not understood yet).
    for case, data, name, subtype in (
            ("eicar_zip", zip_of([("eicar.com", eicar)]), "files.zip", "zip"),
            ("eicar_base64", eicar, "eicar.com", "octet-stream")):
        m = email.message.EmailMessage()
        m["From"] = "a@example.com"
        m["To"] = "b@example.net"
        m["Subject"] = "invoice"
        m.set_content("Please find the file attached.\n")
        m.add_attachment(data, maintype="application", subtype=subtype, filename=name)
        m["Message-ID"] = f"<{case}@client.test>"
        yield m


if __name__ == "__main__":
    out = Path(sys.argv[1])
    eicar = sys.stdin.buffer.read()
    for m in cases(eicar):
        case = m["Message-ID"].strip("<>").split("@")[0]
        (out / f"{case}.eml").write_bytes(m.as_bytes(policy=email.policy.SMTP))
