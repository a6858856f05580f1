"""Faults a test can script per cluster, per endpoint and per page of a walk.

A `Fault` says what goes wrong, where (`endpoint`: a collection path such as
`records.SESSIONS`, which also covers its single-record paths; None for every endpoint)
and when (`page`: 1-based in the order a client walks, None for every page; `times`: how
many requests it hits, None for ever). A `FaultPlan` holds a cluster's faults and hands
out the ones a request meets, counting each use.

Faults that break the connection raise httpx's own exception types inside the app. Under
`httpx.ASGITransport` the client then sees exactly what a real socket would give it
(`httpx.ConnectError`, `httpx.RemoteProtocolError`); under uvicorn a reset mid-body
really closes the connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import httpx


class FaultKind(StrEnum):
    LATENCY = "latency"  # answer normally, `seconds` late
    SERVER_ERROR = "server_error"  # `status` (5xx) in ONTAP's error envelope
    TOO_MANY_REQUESTS = "too_many_requests"  # 429 with Retry-After: `retry_after`
    RESET = "reset"  # headers and half the body, then the connection drops
    TRUNCATED_JSON = "truncated_json"  # a complete 200 response whose JSON is cut short
    REPEAT_RECORD = "repeat_record"  # the page starts with the previous page's last record
    SKIP_RECORD = "skip_record"  # the page's first record is left out of the walk
    EMPTY_PAGE = "empty_page"  # no records, but a next link that carries on
    SHORT_PAGE = "short_page"  # `records` records and a next link, as when return_timeout hits
    HANG = "hang"  # never answers (until the client goes away)
    REFUSE = "refuse"  # the connection is refused


class SimulatedConnectionRefused(httpx.ConnectError):
    """Raised by the app for a REFUSE fault: what a refused TCP connect looks like to httpx."""


class SimulatedConnectionReset(httpx.RemoteProtocolError):
    """Raised by the app mid-body for a RESET fault: a peer that closed the connection."""


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    endpoint: str | None = None
    page: int | None = None
    times: int | None = 1
    seconds: float = 0.0
    status: int = 503
    retry_after: int = 1
    records: int = 0

    @classmethod
    def latency(
        cls,
        seconds: float,
        *,
        endpoint: str | None = None,
        page: int | None = None,
        times: int | None = 1,
    ) -> Fault:
        return cls(FaultKind.LATENCY, endpoint, page, times, seconds=seconds)

    @classmethod
    def server_error(
        cls,
        status: int = 503,
        *,
        endpoint: str | None = None,
        page: int | None = None,
        times: int | None = 1,
    ) -> Fault:
        return cls(FaultKind.SERVER_ERROR, endpoint, page, times, status=status)

    @classmethod
    def too_many_requests(
        cls,
        retry_after: int = 1,
        *,
        endpoint: str | None = None,
        page: int | None = None,
        times: int | None = 1,
    ) -> Fault:
        return cls(FaultKind.TOO_MANY_REQUESTS, endpoint, page, times, retry_after=retry_after)

    @classmethod
    def reset(
        cls, *, endpoint: str | None = None, page: int | None = None, times: int | None = 1
    ) -> Fault:
        return cls(FaultKind.RESET, endpoint, page, times)

    @classmethod
    def truncated_json(
        cls, *, endpoint: str | None = None, page: int | None = None, times: int | None = 1
    ) -> Fault:
        return cls(FaultKind.TRUNCATED_JSON, endpoint, page, times)

    @classmethod
    def repeat_record(
        cls, *, endpoint: str | None = None, page: int | None = None, times: int | None = 1
    ) -> Fault:
        return cls(FaultKind.REPEAT_RECORD, endpoint, page, times)

    @classmethod
    def skip_record(
        cls, *, endpoint: str | None = None, page: int | None = None, times: int | None = 1
    ) -> Fault:
        return cls(FaultKind.SKIP_RECORD, endpoint, page, times)

    @classmethod
    def empty_page(
        cls, *, endpoint: str | None = None, page: int | None = None, times: int | None = 1
    ) -> Fault:
        return cls(FaultKind.EMPTY_PAGE, endpoint, page, times)

    @classmethod
    def short_page(
        cls,
        records: int,
        *,
        endpoint: str | None = None,
        page: int | None = None,
        times: int | None = 1,
    ) -> Fault:
        return cls(FaultKind.SHORT_PAGE, endpoint, page, times, records=records)

    @classmethod
    def hang(
        cls, *, endpoint: str | None = None, page: int | None = None, times: int | None = 1
    ) -> Fault:
        return cls(FaultKind.HANG, endpoint, page, times)

    @classmethod
    def refuse(
        cls, *, endpoint: str | None = None, page: int | None = None, times: int | None = 1
    ) -> Fault:
        return cls(FaultKind.REFUSE, endpoint, page, times)

    def applies_to(self, endpoint: str, page: int) -> bool:
        return (self.endpoint is None or self.endpoint == endpoint) and (
            self.page is None or self.page == page
        )


class FaultPlan:
    """One cluster's scripted faults, each with the uses it has left."""

    def __init__(self) -> None:
        self._entries: list[tuple[Fault, int | None]] = []

    def add(self, *faults: Fault) -> None:
        self._entries.extend((f, f.times) for f in faults)

    def clear(self) -> None:
        self._entries.clear()

    @property
    def pending(self) -> list[Fault]:
        """Faults that will still fire."""
        return [fault for fault, _ in self._entries]

    def take(self, endpoint: str, page: int) -> list[Fault]:
        """The faults this request meets, in the order added; each use is counted."""
        hit: list[Fault] = []
        kept: list[tuple[Fault, int | None]] = []
        for fault, left in self._entries:
            if fault.applies_to(endpoint, page):
                hit.append(fault)
                left = None if left is None else left - 1
                if left is not None and left <= 0:
                    continue
            kept.append((fault, left))
        self._entries = kept
        return hit
