"""Where an IP address is: "City, Country" from a MaxMind database when one is configured."""
import functools
import ipaddress
import logging

from .model.errors import AuditdError, Unavailable

log = logging.getLogger("auditd.geo")


class Locator:
    def __init__(self, database_path: str | None = None):
        self.database_path = database_path or None
        self._reader = None
        if database_path:
            import maxminddb   # only needed when a database is configured
            try:
                self._reader = maxminddb.open_database(database_path)
            except (maxminddb.InvalidDatabaseError, ValueError, OSError) as err:
                raise AuditdError(
                    f"geoip_db {database_path} is not a MaxMind database ({err}): give a "
                    "GeoLite2-City.mmdb or GeoIP2-City.mmdb file, or leave geoip_db out "
                    "(locations are then only Localhost and Private network)") from None
        self.locate = functools.lru_cache(maxsize=4096)(self._locate)

    def _locate(self, ip: str) -> str:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return ""
        if getattr(address, "ipv4_mapped", None):
            address = address.ipv4_mapped
        if address.is_loopback:
            return "Localhost"
        if address.is_private or address.is_link_local:
            return "Private network"
        if self._reader is None:
            return ""
        try:
            record = self._reader.get(str(address))
        except ValueError:
            return ""
        if not record:
            return ""
        city = record.get("city", {}).get("names", {}).get("en", "")
        country = record.get("country", {}).get("names", {}).get("en", "")
        return ", ".join(part for part in (city, country) if part)

    def __reduce__(self):
        # Pickled (for the process that parses big request bodies) as its database's path: the
        # other process opens the database itself.
        return _reopened, (self.database_path,)

    def close(self):
        if self._reader is not None:
            self._reader.close()


_REOPENED: dict[str | None, Locator] = {}


def _reopened(database_path: str | None) -> Locator:
    """A pickled Locator, in another process: opened once there, then the same one (a record's
    body goes to the writer process with the server's Locator, ~a thousand times a second). Its
    file was read when the server started: failing now (removed, replaced) is the server's
    trouble, not the request's."""
    try:
        return _REOPENED[database_path]
    except KeyError:
        pass
    try:
        locator = Locator(database_path)
    except AuditdError as err:
        raise Unavailable(f"{err.message}; it was readable when the server started") from None
    if len(_REOPENED) >= 8:       # a test's many servers in one process, each its own file
        _REOPENED.clear()
    _REOPENED[database_path] = locator
    return locator
