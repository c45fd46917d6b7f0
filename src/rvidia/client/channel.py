"""A client's persistent ``/ws/client`` connection: send submissions, receive pushed results.

Sends come from any thread (serialised by a lock); one reader thread hands every message the master
pushes to the owner's callback, and tells it once when the connection is gone.
"""

from __future__ import annotations

import threading
from typing import Callable

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from rvidia import tls
from rvidia.addresses import ws_url
from rvidia.client.api import MasterUnreachable, TokenRefused
from rvidia.protocol import client as c
from rvidia.protocol.messages import MAX_FRAME_BYTES


class Channel:
    def __init__(self, master: str, token: str | None, on_message: Callable[[c.ToClient], None],
                 on_lost: Callable[[BaseException], None], ca: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        url = ws_url(master, "/ws/client")
        try:
            # Entered as a context manager: the form every websockets version >= 12 accepts as current.
            self._cm = connect(url, additional_headers=headers, ssl=tls.ws_ssl(url, ca),
                               max_size=MAX_FRAME_BYTES, compression=None, open_timeout=10, close_timeout=2)
            self._ws: ClientConnection = self._cm.__enter__()
        except InvalidStatus as exc:
            code = exc.response.status_code
            if code == 401:
                raise TokenRefused(f"the master at {master} refused the token") from None
            raise MasterUnreachable(f"the master at {master} refused the connection (HTTP {code})") from None
        except (OSError, TimeoutError) as exc:
            refused = tls.verify_failure(exc)
            if refused is not None:
                raise MasterUnreachable(tls.explain(master, refused, ca)) from None
            raise MasterUnreachable(f"cannot reach the master at {master}: {exc}") from None
        self._send_lock = threading.Lock()
        self._on_message, self._on_lost = on_message, on_lost
        self.alive = True
        self._reader = threading.Thread(target=self._read, name="rvidia-channel", daemon=True)
        self._reader.start()

    def send(self, message: c.ToMaster) -> None:
        data = c.encode(message)
        try:
            with self._send_lock:
                self._ws.send(data)
        except (ConnectionClosed, OSError) as exc:
            raise MasterUnreachable(f"the connection to the master was lost: {exc}") from None

    def _read(self) -> None:
        reason: BaseException = MasterUnreachable("the connection to the master was closed")
        try:
            for frame in self._ws:
                if isinstance(frame, str):
                    continue
                for message in c.decode_to_client(frame):
                    self._on_message(message)
        except (ConnectionClosed, OSError) as exc:
            reason = MasterUnreachable(f"the connection to the master was lost: {exc}")
        finally:
            self.alive = False
            self._on_lost(reason)

    def close(self) -> None:
        self._cm.__exit__(None, None, None)
        if threading.current_thread() is not self._reader:
            self._reader.join(timeout=5)
