"""The collector's sources file and per-source rate limits.

A source is one sending app or site: ``{"name", "write_key", "enabled", "platform",
"events_per_second"}`` (DESIGN section 13). Write keys are secrets: they are kept only as
SHA-256 digests in memory (a lookup compares digests, not the keys), and no message here
or anywhere in the collector ever shows one; a bad entry is named by its position and name.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from pipeline.ingest.codecs import SOURCE_NAME
from pipeline.names import HEADER_SOURCE

KEYS = frozenset({"name", "write_key", "enabled", "platform", "events_per_second"})


class SourcesError(ValueError):
    """The sources file cannot be used; the message never contains a write key."""


class TokenBucket:
    """``rate`` events a second, with bursts of up to one second's worth.

    A request of n events needs n tokens. One larger than the bucket (a 100-event batch
    at 10 events/s) is admitted when the bucket is full and leaves it in debt, so every
    request can pass eventually and the long-run rate still holds.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = max(rate, 1.0)
        self.tokens = self.capacity
        self._clock = clock
        self._last = clock()

    def take(self, n: int) -> float:
        """0.0 when ``n`` events are admitted (and taken), else seconds until they would be."""
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.rate)
        self._last = now
        need = min(float(n), self.capacity)
        if self.tokens >= need:
            self.tokens -= n
            return 0.0
        return (need - self.tokens) / self.rate


def retry_after(seconds: float) -> str:
    """The ``Retry-After`` header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


@dataclass
class Source:
    name: str
    enabled: bool = True
    platform: str | None = None
    events_per_second: float | None = None
    bucket: TokenBucket | None = field(default=None, repr=False)
    # The Kafka headers of this source's messages, built once.
    headers: list[tuple[str, str | bytes | None]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.headers = [(HEADER_SOURCE, self.name.encode())]
        if self.events_per_second is not None and self.bucket is None:
            self.bucket = TokenBucket(self.events_per_second)


class Sources:
    """The sources of one sources file, found by write key."""

    def __init__(self, entries: Iterable[tuple[str, Source]]) -> None:
        self._by_digest: dict[bytes, Source] = {}
        self.all: list[Source] = []
        for key, source in entries:
            self._by_digest[_digest(key)] = source
            self.all.append(source)

    def lookup(self, write_key: str) -> Source | None:
        return self._by_digest.get(_digest(write_key))

    def __len__(self) -> int:
        return len(self.all)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", errors="surrogatepass")).digest()


def load_sources(path: Path, platforms: Iterable[str]) -> Sources:
    """Read and check the sources file; raises ``SourcesError`` naming the problem."""
    try:
        data = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise SourcesError(f"sources file {path}: cannot read it ({exc.strerror})") from None
    except orjson.JSONDecodeError as exc:
        raise SourcesError(f"sources file {path}: not JSON ({exc})") from None
    return parse_sources(data, frozenset(platforms), str(path))


def parse_sources(data: Any, platforms: frozenset[str], where: str = "sources") -> Sources:
    if not isinstance(data, list):
        raise SourcesError(f"{where}: must be a JSON array of source objects")
    entries: list[tuple[str, Source]] = []
    names: set[str] = set()
    keys: set[bytes] = set()
    for i, raw in enumerate(data):
        source, key = _entry(raw, i, platforms, where)
        if source.name in names:
            raise SourcesError(f"{where}: entry {i}: the name {source.name!r} is used twice")
        if _digest(key) in keys:
            raise SourcesError(
                f"{where}: entry {i} ({source.name}): its write_key is another source's too"
            )
        names.add(source.name)
        keys.add(_digest(key))
        entries.append((key, source))
    return Sources(entries)


def _entry(raw: Any, i: int, platforms: frozenset[str], where: str) -> tuple[Source, str]:
    if not isinstance(raw, dict):
        raise SourcesError(f"{where}: entry {i} must be an object")
    name = raw.get("name")
    if not isinstance(name, str) or not SOURCE_NAME.fullmatch(name):
        raise SourcesError(
            f"{where}: entry {i}: name must be 1-64 characters of letters, digits, '_', "
            "'.' and '-' (starting with a letter or digit)"
        )
    at = f"{where}: entry {i} ({name})"
    unknown = sorted(set(raw) - KEYS)
    if unknown:
        raise SourcesError(f"{at}: unknown field(s) {', '.join(map(repr, unknown))}")
    key = raw.get("write_key")
    if not isinstance(key, str) or not key.strip():
        raise SourcesError(f"{at}: write_key must be a non-empty string")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise SourcesError(f"{at}: enabled must be true or false")
    platform = raw.get("platform")
    if platform is not None and platform not in platforms:
        raise SourcesError(f"{at}: platform must be one of {', '.join(sorted(platforms))}")
    rate = raw.get("events_per_second")
    if rate is not None and (
        isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0
    ):
        raise SourcesError(f"{at}: events_per_second must be a number above 0")
    if rate is not None and not math.isfinite(rate):
        raise SourcesError(f"{at}: events_per_second must be finite")
    source = Source(name, enabled, platform, float(rate) if rate is not None else None)
    return source, key
