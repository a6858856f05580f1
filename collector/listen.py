"""A listening TCP socket for the uvicorn servers the product runs (metrics, simulator)."""

from __future__ import annotations

import socket


def listening_socket(host: str, port: int) -> socket.socket:
    """Bound before uvicorn starts, so the caller knows the port (0 picks a free one) and a
    taken port fails at once, in the caller's thread, with the address in the error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock
