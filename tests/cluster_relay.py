"""A plain TCP relay that a test puts in front of one of the cluster's servers.

Why: to take a remote away the way a network does (connections refused, open
ones cut) and bring it back with its data intact, without touching the server.
The workers reach the S3 server, and every component the git daemon, through
one (tests/cluster_harness.py); nothing here imitates a service.
"""

from __future__ import annotations

import socket
import threading


class Relay:
    """Relay 127.0.0.1:<port> to 127.0.0.1:<upstream>; ``down()`` refuses and cuts connections."""

    def __init__(self, port: int, upstream: int):
        self.port, self.upstream = port, upstream
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def up(self) -> None:
        if self._server:
            return
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def down(self) -> None:
        server, self._server = self._server, None
        if server:
            try:   # wakes the accept() blocked in _accept: no connection gets through after
                server.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            server.close()
        with self._lock:
            for conn in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self._conns.clear()

    def _accept(self, server: socket.socket) -> None:
        while self._server is server:
            try:
                client, _ = server.accept()
            except OSError:
                return
            if self._server is not server:   # taken down while accept() waited
                client.close()
                return
            try:
                remote = socket.create_connection(("127.0.0.1", self.upstream), timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, remote]
            for a, b in ((client, remote), (remote, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
