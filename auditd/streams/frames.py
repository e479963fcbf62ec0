"""WebSocket frames rendered once and shared: a server's frames are not masked, so the same bytes
serve every client."""
import json
import struct


def text_frame(text: str) -> bytes:
    """`text` as one unmasked WebSocket text frame (RFC 6455 section 5.2)."""
    try:
        payload = text.encode("utf-8")
    except UnicodeEncodeError:   # a lone surrogate: send it \u-escaped, as valid UTF-8
        payload = json.dumps(json.loads(text)).encode("ascii")
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload


def log_frame(ts: int, stream_type, line: str) -> bytes:
    message = {"type": "log", "log": line, "timestamp": ts}
    if stream_type:
        message["streamType"] = stream_type
    return text_frame(json.dumps(message, ensure_ascii=False))
