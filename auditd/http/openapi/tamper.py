"""The tamper-evidence operations of the OpenAPI document (docs/TRANSPARENCY.md has the leaf
bytes and the signed message exactly)."""
from .paths import NAMESPACE, UUID, _errors, _json

HEX = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
SCHEMAS = {
    "Checkpoint": {"type": "object", "required": ["origin", "tree_size", "root_hash", "timestamp",
                                                  "signature", "public_key", "note"],
                   "properties": {
                       "origin": {"type": "string"}, "tree_size": {"type": "integer"},
                       "root_hash": HEX, "timestamp": {"type": "integer"},
                       "signature": {"type": "string", "description": "Ed25519, base64"},
                       "public_key": {"type": "string", "description": "32 bytes, base64"},
                       "note": {"type": "string", "description": "a C2SP signed note"}}},
    "Proof": {"type": "object", "required": ["uuid", "tree_size", "root_hash", "leaves"],
              "properties": {
                  "uuid": {"type": "string"}, "tree_size": {"type": "integer"},
                  "root_hash": HEX,
                  "leaves": {"type": "array", "items": {
                      "type": "object", "required": ["leaf_index", "leaf", "inclusion_path"],
                      "properties": {
                          "leaf_index": {"type": "integer"},
                          "leaf": {"type": ["string", "null"],
                                   "description": "the leaf bytes, base64 (null once purged)"},
                          "inclusion_path": {"type": "array", "items": HEX}}}}}},
    "Consistency": {"type": "object", "required": ["first", "second", "consistency_path"],
                    "properties": {"first": {"type": "integer"}, "second": {"type": "integer"},
                                   "consistency_path": {"type": "array", "items": HEX}}},
}
SIZE = {"type": "integer", "minimum": 0}


def tamper_paths(prefixes) -> dict:
    out = {
        "/api/audit/v1/checkpoint/": {
            "get": {"operationId": "getCheckpoint", "tags": ["tamper evidence"],
                    "summary": "The latest signed tree head of the tamper-evident log",
                    "responses": {"200": {"description": "The checkpoint",
                                          "content": _json("Checkpoint")},
                                  **_errors("400", "401", "503")}},
            "post": {"operationId": "signCheckpoint", "tags": ["tamper evidence"],
                     "summary": "Sign a checkpoint of the log as it is now (role admin)",
                     "responses": {"201": {"description": "The checkpoint",
                                           "content": _json("Checkpoint")},
                                   **_errors("400", "401", "403", "503")}}},
        "/api/audit/v1/checkpoint/consistency/": {
            "get": {"operationId": "getConsistency", "tags": ["tamper evidence"],
                    "summary": "The RFC 9162 consistency path between two tree sizes",
                    "parameters": [{"in": "query", "name": n, "required": True, "schema": SIZE}
                                   for n in ("first", "second")],
                    "responses": {"200": {"description": "The path",
                                          "content": _json("Consistency")},
                                  **_errors("400", "401", "503")}}},
    }
    for suffix, prefix in prefixes:
        out[prefix + "/action/{uuid}/proof/"] = {
            "parameters": [*([NAMESPACE] if suffix else []), UUID],
            "get": {"operationId": "getProof" + suffix, "tags": ["tamper evidence"],
                    "summary": "Every event of the action, with its inclusion path",
                    "description": "Against the latest checkpoint (signed then if it does not "
                                   "cover the action yet), or the tree of `tree_size` leaves.",
                    "parameters": [{"in": "query", "name": "tree_size", "schema": SIZE}],
                    "responses": {"200": {"description": "The proof", "content": _json("Proof")},
                                  **_errors("400", "401", "404", "503")}}}
    return out
