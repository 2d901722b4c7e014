"""Parses the message on stdin with Python's `email` (policy default, strict enough to
decode every part) and prints its leaf parts as JSON, one object each: content type,
disposition, file name, and the decoded text of text parts; message/rfc822 parts are
walked into."""

import email
import email.policy
import json
import sys

message = email.message_from_bytes(sys.stdin.buffer.read(), policy=email.policy.default)
parts = []
for part in message.walk():
    if part.is_multipart():
        continue
    entry = {
        "type": part.get_content_type(),
        "disposition": part.get_content_disposition(),
        "filename": part.get_filename(),
        "defects": [type(d).__name__ for d in part.defects],
    }
    if part.get_content_maintype() == "text":
        entry["text"] = part.get_content()
    parts.append(entry)
print(json.dumps({"defects": [type(d).__name__ for d in message.defects], "parts": parts}))
