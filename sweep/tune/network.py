"""Keep a local Ray instance off the network: a network namespace with nothing but loopback.

Ray 2.60's GCS, raylet and core-worker gRPC servers listen on every interface (``::``)
whatever node IP they are given (measured; Ray's C++ servers bind ``0.0.0.0`` and offer no
option), with token auth as their only protection. A sweep that starts its own Ray
instance and needs no network (its tracking store and frame store are local files) moves
its driver thread into a fresh network namespace whose only interface is loopback before
Ray starts: every process Ray then spawns inherits it, so nothing it listens on can be
reached from another machine, or from another namespace of this one.

Only the calling thread moves (``unshare(CLONE_NEWNET)`` is per thread); threads and
processes it starts afterwards follow it. It needs ``CAP_SYS_ADMIN`` (root); elsewhere
:func:`isolate_loopback` returns False and the caller keeps Ray's token auth as the protection.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct

CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1


def _bring_up_loopback() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


def interfaces() -> list[str]:
    """Network interfaces visible to the calling thread."""
    return [name for _, name in socket.if_nameindex()]


def isolate_loopback() -> bool:
    """Move the calling thread into a new network namespace with loopback only; False where not allowed."""
    if os.geteuid() != 0:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        return False
    _bring_up_loopback()
    return True
