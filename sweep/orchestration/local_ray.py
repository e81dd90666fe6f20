"""The local Ray instance of a sweep without `--address` listens on 127.0.0.1 only (docs/cluster.md, "Ports").

Ray binds its gRPC servers to 127.0.0.1 only when the node's address is the loopback address; otherwise to
every interface. `ray.init(_node_ip_address="127.0.0.1")` does not get there: Ray 2.60 turns a loopback
address given to it back into the machine's own address (`services.resolve_ip_for_localhost`). What makes
the node address loopback is Ray's own switch between a one-machine instance and a cluster,
`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` (on by default on Linux, off on macOS and Windows). Ray reads it when it
is first imported, so this runs before the driver imports Ray, and never with `--address`: a driver that
joins a cluster must see the node's real address to find its raylet.
"""
from __future__ import annotations

import os

ONE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def listen_on_loopback(address: str) -> None:
    if not address:
        os.environ[ONE_MACHINE_ENV] = "0"
