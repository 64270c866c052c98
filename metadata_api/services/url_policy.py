"""Which `exporter_url`s may become Prometheus scrape targets (`/api/sd`).

A run registers the URL its exporter serves; Prometheus then scrapes whatever `/api/sd` lists, from inside the
network. So `check_exporter_url` (the `RunCreate.exporter_url` validator: a 422 naming the field) accepts only:
- `http` or `https` URLs with a host, a valid port and no credentials (`user:pass@`);
- no link-local address (169.254.0.0/16, fe80::/10) and no cloud metadata endpoint (169.254.169.254,
  fd00:ec2::254, 100.100.100.200, `metadata.google.internal`, ...). Addresses are also recognised in the
  shorthand forms some resolvers accept (`2852039166`, `0xa9fea9fe`, IPv4-mapped IPv6).

`EXPORTER_URL_ALLOW` (comma-separated CIDRs, `configure(settings)`, done by `create_app`) accepts link-local
addresses in those networks (e.g. `169.254.0.0/16` where exporters really listen on link-local addresses); a
metadata address only when listed exactly (`169.254.169.254/32`). Host names are not resolved: a name is judged by
its spelling, and the metadata names are always refused.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

from ..settings import Settings, split_list

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "168.63.129.16"))
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata.goog", "metadata", "instance-data",
                            "instance-data.ec2.internal"})
LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
_NUMERIC_HOST = re.compile(r"[0-9a-fA-FxX.]+")

_allowed: tuple[IpNetwork, ...] = ()


def configure(settings: Settings) -> None:
    """Take the networks of EXPORTER_URL_ALLOW for this process."""
    global _allowed
    _allowed = tuple(ipaddress.ip_network(n, strict=False) for n in split_list(settings.exporter_url_allow))


def check_exporter_url(url: str | None) -> str | None:
    """`url` when Prometheus may scrape it, else ValueError saying why (pydantic turns it into a 422)."""
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as error:
        raise ValueError(f"not a valid URL ({error})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError("must not carry credentials (user:password@); Prometheus would expose them in /api/sd")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise ValueError("has no host")
    if host in METADATA_NAMES:
        raise ValueError(f"{host} is a cloud metadata endpoint, not an exporter")
    address = _address(host)
    if address is None:
        return url
    if address in METADATA_ADDRESSES:
        if ipaddress.ip_network(address) in _allowed:  # only an exact entry (a /32 or /128) allows one of these
            return url
        raise ValueError(f"{address} is a cloud metadata endpoint, not an exporter")
    if any(address in network for network in LINK_LOCAL) and not any(address in n for n in _allowed):
        raise ValueError(f"{address} is a link-local address (allow its network with EXPORTER_URL_ALLOW)")
    return url


def _address(host: str) -> IpAddress | None:
    """The IP address `host` spells (inet_aton shorthands and IPv4-mapped IPv6 included), or None for a name."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        if not _NUMERIC_HOST.fullmatch(host):
            return None
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except (OSError, ValueError):
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
