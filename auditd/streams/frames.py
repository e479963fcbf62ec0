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
    return _frame(payload)


def _frame(payload: bytes) -> bytes:
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


def as_array(frames: bytes) -> bytes:
    """Text frames (as a feed joins them) as one text frame whose message is the JSON array of
    their messages: for a client that renders many lines, one message event for a batch instead
    of one per line."""
    view, parts, at = memoryview(frames), [], 0
    while at < len(view):
        size, at = view[at + 1] & 0x7F, at + 2
        if size >= 126:
            width = 2 if size == 126 else 8
            size, at = int.from_bytes(view[at:at + width], "big"), at + width
        parts.append(view[at:at + size])
        at += size
    return _frame(b"[" + b",".join(parts) + b"]")
