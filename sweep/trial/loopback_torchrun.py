"""torchrun for a trial on one node, its rendezvous listening on 127.0.0.1 only (docs/cluster.md, "Ports").

`torchrun --standalone` hosts two TCP stores (the rendezvous's, and the one its ranks share), and torch's
TCPStore server listens on every interface whatever host it is given; only a server handed a listening
socket (`master_listen_fd`) listens where that socket was bound. A trial never spans nodes, so nothing
outside its node needs those ports: this module runs torchrun's own entry point with every store it hosts
made from a socket bound to 127.0.0.1, and gives the agent 127.0.0.1 as the node's address (`--local-addr`),
which is the address its ranks connect to. The ranks' own sockets (gloo) already bind to that address.

`python -m sweep.trial.loopback_torchrun ARGS` takes torchrun's arguments; `loopback(argv)` turns a one-node
torchrun command (`torchrun --standalone ...`, `python -m torch.distributed.run --standalone ...`) of the
sweep's own Python environment into one that runs through this module. A torchrun of another environment
is left as it is: its torch may make its stores differently.
"""
from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path

LOOPBACK = "127.0.0.1"
TORCHRUN = "torchrun"
STANDALONE = "--standalone"
LOCAL_ADDR = ("--local-addr", "--local_addr")


TORCHRUN_MODULE = ("-m", "torch.distributed.run")
MODULE = "sweep.trial.loopback_torchrun"


def command(args: list[str]) -> list[str]:
    """torchrun with `args`, through this module."""
    return [sys.executable, "-m", MODULE, *args]


def _ours(program: str, name: str) -> bool:
    """`program` (as a command's first word) is `name` of this Python environment."""
    path = shutil.which(program)
    return path is not None and Path(path).name == name and Path(path).parent == Path(sys.executable).parent


def loopback(argv: list[str]) -> list[str]:
    """`argv` run through this module when it is a one-node torchrun of this environment, else as it is."""
    if argv and _ours(argv[0], TORCHRUN):
        args = argv[1:]
    elif argv and _ours(argv[0], Path(sys.executable).name) and tuple(argv[1:3]) == TORCHRUN_MODULE:
        args = argv[3:]
    else:
        return argv
    return command(args) if STANDALONE in args else argv


def _store_class():
    import torch.distributed as dist

    class LoopbackTCPStore(dist.TCPStore):
        """A TCPStore whose server, when this process hosts it, listens on 127.0.0.1 only."""

        def __init__(self, host_name: str, port: int, *args, **kwargs):
            is_master = kwargs.get("is_master", args[1] if len(args) > 1 else False)
            if is_master and kwargs.get("master_listen_fd") is None:
                listener = socket.create_server((LOOPBACK, port), backlog=socket.SOMAXCONN)
                port = listener.getsockname()[1]
                kwargs["master_listen_fd"] = listener.detach()  # the store owns and closes it
            super().__init__(host_name, port, *args, **kwargs)

    return LoopbackTCPStore


def main(args: list[str]) -> None:
    import torch.distributed as dist
    from torch.distributed.elastic.rendezvous import c10d_rendezvous_backend
    from torch.distributed.run import main as torchrun

    store = _store_class()
    # The two places torchrun's agent makes its stores: c10d_rendezvous_backend binds the name at import,
    # the dynamic rendezvous looks it up on torch.distributed when it makes the shared store.
    dist.TCPStore = store
    c10d_rendezvous_backend.TCPStore = store
    if not any(a.split("=", 1)[0] in LOCAL_ADDR for a in args):
        args = [LOCAL_ADDR[0], LOOPBACK, *args]
    torchrun(args)


if __name__ == "__main__":
    main(sys.argv[1:])
