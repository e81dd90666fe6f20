"""The TCP sockets processes listen on, read from /proc (Linux): the address each is bound to."""
from __future__ import annotations

import ipaddress
import os
from pathlib import Path

LISTEN = "0A"
LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def listening_sockets(pids: list[int]) -> dict[int, list[tuple[str, int]]]:
    """(address, port) of each TCP socket in LISTEN state that a process of `pids` holds."""
    listening = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == LISTEN:
                listening[fields[9]] = fields[1]
    found = {}
    for pid in pids:
        try:
            inodes = [os.readlink(fd)[len("socket:["):-1] for fd in Path(f"/proc/{pid}/fd").iterdir()
                      if os.readlink(fd).startswith("socket:[")]
        except OSError:
            continue
        socks = [_address(listening[i]) for i in inodes if i in listening]
        if socks:
            found[pid] = socks
    return found


def _address(hex_address: str) -> tuple[str, int]:
    ip, port = hex_address.split(":")
    raw = bytes.fromhex(ip)
    # /proc/net/tcp* print each 32-bit word of the address in host (little-endian) order.
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(raw)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return f"::ffff:{address.ipv4_mapped}", int(port, 16)
    return str(address), int(port, 16)
