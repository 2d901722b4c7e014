"""Writes the test messages of tests/attachments.rs into the directory given, one
<case>.eml each, built with Python's `email` package (policy SMTP: CRLF line ends) and,
where `email` would not write what a hostile or old client sends, by hand.

Zip archives are made with `zipfile`; it cannot encrypt, so the encrypted archive is an
ordinary one with the encryption bit (general purpose flag bit 0) set in its local and
central headers, which is all a listing can see of encryption anyway.
"""

import base64
import email.message
import email.policy
import io
import sys
import zipfile
from pathlib import Path

# A PE executable as far as magic bytes go: "MZ", a DOS header pointing at 0x40, and
# the PE signature there.
PE = b"MZ" + b"\x90\x00" * 29 + b"\x40\x00\x00\x00" + b"PE\x00\x00" + b"\x4c\x01" + b"\x00" * 64
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 17


def zip_of(entries):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries:
            z.writestr(name, data)
    return buf.getvalue()


def flag_encrypted(data):
    """Sets the encryption bit in every local (PK\\3\\4, flags at +6) and central
    (PK\\1\\2, flags at +8) header."""
    out = bytearray(data)
    for sig, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        i = out.find(sig)
        while i != -1:
            out[i + at] |= 1
            i = out.find(sig, i + 4)
    return bytes(out)


def base(subject="test"):
    m = email.message.EmailMessage()
    m["From"] = "sender@client.example"
    m["To"] = "rcpt@dest.example"
    m["Subject"] = subject
    m.set_content("Hello,\n\nplease find the file attached.\n")
    return m


def with_attachment(data, filename, maintype="application", subtype="octet-stream"):
    m = base()
    m.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return m


def smtp_bytes(m):
    return m.as_bytes(policy=email.policy.SMTP)


def hand_made(part_headers, body_b64):
    """A multipart message with one attachment whose headers are written verbatim."""
    return (
        "From: sender@client.example\r\n"
        "To: rcpt@dest.example\r\n"
        "Subject: hand made\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b1"\r\n'
        "\r\n"
        "preamble\r\n"
        "--b1\r\n"
        "Content-Type: text/plain\r\n"
        "\r\n"
        "see attached\r\n"
        "--b1\r\n" + part_headers + "Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.b64encode(body_b64).decode() + "\r\n"
        "--b1--\r\n"
        "epilogue\r\n"
    ).encode()


def deeply_nested(depth):
    lines = ["From: a@client.example", "To: b@dest.example", "Subject: deep", "MIME-Version: 1.0"]
    for i in range(depth):
        lines += [f'Content-Type: multipart/mixed; boundary="d{i}"', "", f"--d{i}"]
    lines += ["Content-Type: application/octet-stream", 'Content-Disposition: attachment; filename="deep.exe"', "", "MZ"]
    for i in reversed(range(depth)):
        lines += [f"--d{i}--"]
    return ("\r\n".join(lines) + "\r\n").encode()


def forwarded(inner, encode):
    outer = base("Fwd")
    part = email.message.EmailMessage()
    part["Content-Type"] = "message/rfc822"
    part["Content-Disposition"] = "inline"
    if encode:
        part["Content-Transfer-Encoding"] = "base64"
        part.set_payload(base64.encodebytes(smtp_bytes(inner)).decode().replace("\n", "\r\n"))
    else:
        part.set_payload([inner])
    outer.make_mixed()
    outer.attach(part)
    return outer


def cases():
    clean = base()
    clean.set_content("Hello,\n\n" + ("This is a plain text message of about four KiB.\n" * 84))
    yield "clean", smtp_bytes(clean)
    yield "exe_named", smtp_bytes(with_attachment(PE, "setup.exe"))
    yield "renamed_exe", smtp_bytes(with_attachment(PE, "report.pdf", "application", "pdf"))
    yield "double_ext", smtp_bytes(with_attachment(b"not really", "invoice.pdf.exe"))
    yield "rlo", smtp_bytes(with_attachment(b"text", "invoice\u202efdp.exe"))
    yield "trailing_dot", smtp_bytes(with_attachment(b"text", "setup.exe. "))
    yield "rfc2231", smtp_bytes(with_attachment(
        b"data", "résumé of a very long name that needs continuations for sure because it is long.exe"))
    name = base64.b64encode("Rechnung für Mai.exe".encode()).decode()
    yield "rfc2047", hand_made(
        f'Content-Type: application/octet-stream; name="=?utf-8?B?{name}?="\r\n'
        "Content-Disposition: attachment\r\n", b"data")
    yield "rfc2047_mid", hand_made(
        'Content-Type: application/octet-stream\r\n'
        'Content-Disposition: attachment; filename="Rechnung =?utf-8?Q?f=C3=BCr?= Mai.exe"\r\n',
        b"data")
    yield "inline_image", smtp_bytes(with_attachment(PNG, "logo.png", "image", "png"))
    big = PDF + bytes(range(256)) * 400  # about 100 KiB
    yield "big_pdf", smtp_bytes(with_attachment(big, "big.pdf", "application", "pdf"))
    inner = zip_of([("tools/tool.exe", PE), ("readme.txt", b"read me")])
    yield "nested_zip", smtp_bytes(with_attachment(
        zip_of([("inner.zip", inner), ("notes.txt", b"notes")]), "bundle.zip", "application", "zip"))
    yield "type_in_zip", smtp_bytes(with_attachment(
        zip_of([("photo.jpg", PE)]), "photos.zip", "application", "zip"))
    yield "clean_zip", smtp_bytes(with_attachment(
        zip_of([("a.txt", b"a"), ("b.pdf", PDF)]), "docs.zip", "application", "zip"))
    whole = zip_of([("a.txt", b"a" * 100)])
    yield "broken_zip", smtp_bytes(with_attachment(whole[: len(whole) // 2], "broken.zip", "application", "zip"))
    # A zip declared text/plain: its octets must be judged as sent, not as text.
    yield "zip_as_text", hand_made(
        'Content-Type: text/plain; charset=utf-8\r\n'
        'Content-Disposition: attachment; filename="notes.txt"\r\n',
        zip_of([("run.bat", b"@echo off\r\n" + bytes(range(128, 256)))]))
    yield "encrypted_zip", smtp_bytes(with_attachment(
        flag_encrypted(zip_of([("secret.pdf", PDF)])), "secret.zip", "application", "zip"))
    # 120 entries of 1 MiB of zeros: 120 MiB declared, about 120 KiB compressed.
    zeros = bytes(1 << 20)
    yield "bomb_zip", smtp_bytes(with_attachment(
        zip_of([(f"zeros{i}.bin", zeros) for i in range(120)]), "bomb.zip", "application", "zip"))
    yield "many_entries_zip", smtp_bytes(with_attachment(
        zip_of([(f"f{i}.txt", b"") for i in range(1500)]), "many.zip", "application", "zip"))
    yield "forwarded_7bit", smtp_bytes(forwarded(with_attachment(PE, "setup.exe"), False))
    yield "forwarded_base64", smtp_bytes(forwarded(with_attachment(PE, "setup.exe"), True))
    yield "deep", deeply_nested(15)
    single = email.message.EmailMessage()
    single["From"] = "a@client.example"
    single["Subject"] = "just a file"
    single.set_content(PE, maintype="application", subtype="octet-stream", filename="alone.exe")
    yield "single_part", smtp_bytes(single)


if __name__ == "__main__":
    out = Path(sys.argv[1])
    for case, data in cases():
        (out / f"{case}.eml").write_bytes(data)
