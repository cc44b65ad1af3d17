"""A TCP proxy in front of PostgreSQL that breaks connections at the worst moments of a COMMIT.

It reads the wire protocol just enough to find a COMMIT going to the server and its CommandComplete coming
back, and can then:

- ``lose_replies``: forward the COMMIT, let the server commit, and cut the connection before the reply reaches
  the client (what a failover or a dying proxy does): the client cannot know that its unit committed;
- ``lose_commits``: cut the connection instead of forwarding the COMMIT: the server aborts the transaction
  when it sees its client gone, and the client cannot know that either;
- ``lose_statement_replies``: for a statement whose text holds one of ``statement_markers`` (an autocommitted write
  such as a claim), let the server run and commit it, and cut the connection before its CommandComplete
  reaches the client;
- ``cut_all()``: cut every open connection (a restart as the pool sees it).

Connections must not negotiate TLS or GSS (``sslmode=disable&gssencmode=disable``), so that every message has
a type and a length.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
from dataclasses import dataclass, field


@dataclass
class Faults:
    """Probabilities (0..1) of each fault per COMMIT, and what happened."""

    lose_replies: float = 0.0
    lose_commits: float = 0.0
    lose_statement_replies: float = 0.0
    statement_markers: tuple[bytes, ...] = ()
    replies_lost: int = 0
    statement_replies_lost: int = 0
    commits_lost: int = 0
    commits_seen: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Link:
    """One client connection and its server connection, pumped by two threads."""

    def __init__(self, proxy: CommitProxy, client: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server = socket.create_connection(("127.0.0.1", proxy.server_port))
        # Messages are forwarded one by one: without this, Nagle's algorithm and delayed acknowledgements add
        # tens of milliseconds to every round trip.
        for sock in (client, self.server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.closed = threading.Event()
        self.commit_pending = False
        self.lose_reply = False
        #: Prepared statements (by name) whose text holds the marker; the marked one bound, awaiting its reply.
        self.marked: dict[bytes, bool] = {}
        self.lose_statement_reply = False

    def start(self) -> None:
        threading.Thread(target=self._pump, args=(self.client, self.server, True), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.server, self.client, False), daemon=True).start()

    def cut(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            for sock in (self.client, self.server):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _pump(self, source: socket.socket, target: socket.socket, from_client: bool) -> None:
        buffer = b""
        started = not from_client  # the client's startup message has no type byte
        try:
            while not self.closed.is_set():
                data = source.recv(65536)
                if not data:
                    break
                buffer += data
                while True:
                    if not started:
                        if len(buffer) < 4:
                            break
                        (length,) = struct.unpack("!I", buffer[:4])
                        if len(buffer) < length:
                            break
                        message, buffer = buffer[:length], buffer[length:]
                        started = True
                    else:
                        if len(buffer) < 5:
                            break
                        (length,) = struct.unpack("!I", buffer[1:5])
                        if len(buffer) < 1 + length:
                            break
                        message, buffer = buffer[: 1 + length], buffer[1 + length :]
                        if not self._forward(message, from_client):
                            self.cut()
                            return
                        continue
                    target.sendall(message)
        except OSError:
            pass
        finally:
            self.cut()

    def _forward(self, message: bytes, from_client: bool) -> bool:
        """Send ``message`` on, or return False to cut the link instead."""
        faults = self.proxy.faults
        kind, body = message[:1], message[5:]
        if from_client and kind in (b"Q", b"P") and _is_commit(kind, body):
            with faults.lock:
                faults.commits_seen += 1
                draw = random.random()
                if draw < faults.lose_commits:
                    faults.commits_lost += 1
                    return False
                self.lose_reply = draw < faults.lose_commits + faults.lose_replies
                self.commit_pending = True
        elif not from_client and kind == b"C" and self.commit_pending and body.rstrip(b"\0") == b"COMMIT":
            self.commit_pending = False
            if self.lose_reply:
                with faults.lock:
                    faults.replies_lost += 1
                return False
        elif from_client and kind == b"P":
            name, _, rest = body.partition(b"\0")
            query = rest.partition(b"\0")[0]
            self.marked[name] = any(marker in query for marker in faults.statement_markers)
        elif from_client and kind == b"B":
            _portal, _, rest = body.partition(b"\0")
            if self.marked.get(rest.partition(b"\0")[0], False):
                with faults.lock:
                    self.lose_statement_reply = random.random() < faults.lose_statement_replies
        elif not from_client and kind == b"C" and self.lose_statement_reply:
            self.lose_statement_reply = False
            with faults.lock:
                faults.statement_replies_lost += 1
            return False
        (self.server if from_client else self.client).sendall(message)
        return True


def _is_commit(kind: bytes, body: bytes) -> bool:
    if kind == b"Q":
        return body.rstrip(b"\0").strip().upper() == b"COMMIT"
    # Parse: statement name, NUL, query text, NUL, ...
    _, _, rest = body.partition(b"\0")
    query, _, _ = rest.partition(b"\0")
    return query.strip().upper() == b"COMMIT"


class CommitProxy:
    """Listens on a free port of 127.0.0.1 and forwards to ``server_port``, with :class:`Faults`."""

    def __init__(self, server_port: int) -> None:
        self.server_port = server_port
        self.faults = Faults()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port: int = self._listener.getsockname()[1]
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, database: str, **query: str) -> str:
        """A URL through the proxy (TLS and GSS off, so that the proxy can read the messages)."""
        params = {"sslmode": "disable", "gssencmode": "disable", **query}
        tail = "&".join(f"{key}={value}" for key, value in params.items())
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}?{tail}"

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                link = _Link(self, client)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._links = [other for other in self._links if not other.closed.is_set()]
                self._links.append(link)
            link.start()

    def open_links(self) -> int:
        """How many connections pass through the proxy right now."""
        with self._lock:
            return sum(not link.closed.is_set() for link in self._links)

    def cut_all(self) -> int:
        """Cut every open connection; return how many."""
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.cut()
        return len(links)

    def stop(self) -> None:
        """Stop listening and cut every connection."""
        self._stopped.set()
        self._listener.close()
        self.cut_all()
