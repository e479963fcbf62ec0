"""Resource URIs of the objects actions apply to, compared with and without a namespace segment."""

RESOURCE_TYPES = frozenset(
    {"container", "service", "stack", "node", "nodecluster", "cluster", "repository", "action"})


def normalize_object_uri(uri: str) -> str:
    """The namespace-free form of a resource URI, used as the object's identity.

    `/api/app/v1/alice/service/ID/` and `/api/app/v1/service/ID/` are the same object: the segment
    right after `v1` is a namespace when the segment after it is a resource type.
    """
    parts = [p for p in uri.strip().split("/") if p]
    for i, part in enumerate(parts[:-2]):
        if part == "v1" and parts[i + 1] not in RESOURCE_TYPES and parts[i + 2] in RESOURCE_TYPES:
            del parts[i + 1]
            break
    return "/" + "/".join(parts) + "/" if parts else ""


def action_uri(uuid: str) -> str:
    return f"/api/audit/v1/action/{uuid}/"
