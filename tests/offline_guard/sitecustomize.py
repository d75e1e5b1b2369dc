"""Loaded into child processes by tests/training/test_offline.py: refuses, and records, every attempt to
reach a non-loopback address (connect or DNS lookup), so a test can prove the tool chain never
touches the network."""

import ipaddress
import os
import socket

_LOG = os.environ.get("INSPECTOR_NET_LOG")
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _local(host) -> bool:
    if host is None:
        return True
    host = host.decode() if isinstance(host, bytes) else str(host)
    if host in ("localhost", "") or host.startswith("/"):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _record(what: str) -> None:
    if _LOG:
        with open(_LOG, "a") as fh:
            fh.write(what + "\n")


def _check(address, kind):
    host = address[0] if isinstance(address, tuple) else address
    if not _local(host):
        _record(f"{kind} {address!r}")
        raise OSError(101, f"network is unreachable (offline guard): {address!r}")


def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _check(address, "connect")
    return _real_connect(self, address)


def connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _check(address, "connect")
    return _real_connect_ex(self, address)


def getaddrinfo(host, *args, **kw):
    if not _local(host):
        _record(f"dns {host!r}")
        raise socket.gaierror(socket.EAI_NONAME, f"offline guard: no DNS for {host!r}")
    return _real_getaddrinfo(host, *args, **kw)


socket.socket.connect = connect
socket.socket.connect_ex = connect_ex
socket.getaddrinfo = getaddrinfo
