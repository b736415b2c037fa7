"""The blocking REST client for notebook cells and scripts, on a private loop thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

from .._loop import close_loop
from .._secrets import SecretKey
from .._threads import BackgroundThread
from .._types import AssetId, TimeNs
from ..exceptions import CollectorError
from .client import RestClient
from .wire import (
    Asset,
    Bars,
    CurrentRate,
    CurrentRates,
    Period,
    RestUsage,
    T,
)

logger = logging.getLogger("coinrates_nb.rest")



class SyncRestClient(BackgroundThread):
    """:class:`RestClient` for notebook cells and scripts: blocking calls, run on a private loop thread.

    The loop lives on one daemon thread (started on first use or by :meth:`start`), as the
    collector's does, so a call from a cell never nests event loops (no ``nest_asyncio``).
    ``stop()`` closes the HTTP session and ends the thread; it is idempotent and ``with`` works.
    Arguments are :class:`RestClient`'s. Interrupting a call (Ctrl-C) cancels its request.
    """

    EXIT_ORDER = 3
    EXIT_TIMEOUT = 2.0

    def __init__(self, base_url: str, api_key: SecretKey | str | None = None, **options: Any) -> None:
        self.client = RestClient(base_url, api_key, **options)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._stop_at_exit()

    def start(self) -> SyncRestClient:
        """Start the loop thread; idempotent."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return self
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            thread = threading.Thread(target=self._main, args=(loop, ready), name="coinrates-rest", daemon=True)
            self._loop, self._thread = loop, thread
            thread.start()
            ready.wait(10.0)
        return self

    def _main(self, loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        """Thread body: run the loop until stopped, then end it cleanly (nothing dies silently)."""
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()  # close_loop (below) ends the executor threads that parsed big pages
        except BaseException:  # noqa: BLE001 - top of the thread
            logger.error("REST client loop failed", exc_info=True)
        finally:
            try:
                close_loop(loop)
            finally:
                self._loop = None

    def stop(self, timeout: float = 5.0) -> None:
        """Close the session and end the thread; idempotent."""
        with self._lock:
            thread, loop = self._thread, self._loop
            self._thread = None
        if thread is None or loop is None:
            return
        if threading.current_thread() is thread:
            raise CollectorError("SyncRestClient.stop() was called from its own loop thread")
        if thread.is_alive() and not loop.is_closed():
            try:
                asyncio.run_coroutine_threadsafe(self.client.close(), loop).result(timeout)
            except (concurrent.futures.TimeoutError, RuntimeError):
                logger.warning("REST session did not close within %.1f s", timeout)
            try:
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:  # the loop closed meanwhile
                pass
            thread.join(timeout)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` (a :class:`RestClient` call) on the loop thread; return its future."""
        self.start()
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            coro.close()
            raise CollectorError("the REST client's loop thread is not running")
        if threading.current_thread() is thread:
            coro.close()
            raise CollectorError("a blocking SyncRestClient call was made from its own loop thread; await the "
                                 "RestClient (.client) there instead")
        return asyncio.run_coroutine_threadsafe(coro, loop)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        future = self.submit(coro)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def history(self, base: AssetId, quote: AssetId, period: str, start_ns: TimeNs, end_ns: TimeNs,
                limit: int | None = None, *, on_page: Callable[[int], None] | None = None) -> Bars:
        """Blocking :meth:`RestClient.history` (``on_page`` is called on the loop thread)."""
        return self._run(self.client.history(base, quote, period, start_ns, end_ns, limit, on_page=on_page))

    def current(self, base: AssetId, quote: AssetId, time_ns: TimeNs | None = None) -> CurrentRate | None:
        """Blocking :meth:`RestClient.current`."""
        return self._run(self.client.current(base, quote, time_ns))

    def current_all(self, base: AssetId, filter_asset_id: str | Iterable[str] | None = None, invert: bool = False,
                    time_ns: TimeNs | None = None) -> CurrentRates:
        """Blocking :meth:`RestClient.current_all`."""
        return self._run(self.client.current_all(base, filter_asset_id, invert, time_ns))

    def assets(self, refresh: bool = False) -> Mapping[AssetId, Asset]:
        """Blocking :meth:`RestClient.assets`."""
        return self._run(self.client.assets(refresh))

    def require_assets(self, items: str | Iterable[str]) -> None:
        """Blocking :meth:`RestClient.require_assets`."""
        self._run(self.client.require_assets(items))

    def periods(self, refresh: bool = False) -> tuple[Period, ...]:
        """Blocking :meth:`RestClient.periods`."""
        return self._run(self.client.periods(refresh))

    @property
    def usage(self) -> RestUsage:
        """:attr:`RestClient.usage`."""
        return self.client.usage

    def usage_by_day(self) -> dict[str, RestUsage]:
        """:meth:`RestClient.usage_by_day`."""
        return self.client.usage_by_day()

    @property
    def simulated(self) -> bool:
        """:attr:`RestClient.simulated`."""
        return self.client.simulated

    def __repr__(self) -> str:
        return repr(self.client).replace("<RestClient", "<SyncRestClient", 1)

