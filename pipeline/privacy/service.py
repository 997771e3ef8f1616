"""Privacy requests end to end, for the CLI and for a worker resuming a deletion.

A request is recorded on ``privacy.requests`` and the call returns only once the broker
acknowledged it: from then on every worker's validate stage judges new events with it (it
reads the topic to its end before each take). Then the audit row is written, and a delete
runs (``deletion.py``). Whatever a crash leaves undone (a deletion, an audit row) the next
``resume`` finishes: the CLI runs it before each request, a worker every
``TRACKFLOW_PRIVACY_RESUME_SECONDS``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import duckdb

from pipeline.identity.rules import IdentityRules
from pipeline.privacy import purge
from pipeline.privacy.audit import audited_states, write_audit
from pipeline.privacy.deletion import Deleter, Log, exclusive
from pipeline.privacy.requests import DELETE, DONE, PENDING, SUPPRESS, UNSUPPRESS, Request
from pipeline.privacy.resolve import resolve
from pipeline.privacy.state import PrivacyState


class UnknownIdentifier(LookupError):
    """No person in One ID (nor in earlier requests) has the identifier."""


class NotSuppressed(LookupError):
    """An unsuppress for a person no request suppresses."""


@dataclass
class Privacy:
    lake_dir: Path
    connect: Callable[[], duckdb.DuckDBPyConnection]
    rules: IdentityRules
    log: Log
    key: str
    read: Callable[[], list[Request]]  # every record of the topic, in log order
    now: Callable[[], int] = field(default=lambda: int(time.time() * 1000))

    def state(self) -> PrivacyState:
        state = PrivacyState()
        state.apply(self.read())
        return state

    def deleter(self) -> Deleter:
        return Deleter(self.lake_dir, self.connect, self.rules, self.log, self.key)

    def submit(self, action: str, node: str, actor: str, reason: str | None) -> Request:
        """Record a request about the person of ``node``; a delete runs to ``done``."""
        state = self.state()
        con = self.connect()
        try:
            person = resolve(
                con, self.rules, node, [r.identifiers for r in state.requests.values()]
            )
        finally:
            con.close()
        if not person:
            raise UnknownIdentifier(
                f"no person in One ID has {node.partition(':')[0]} {_shown(node)}"
            )
        lifted: list[Request] = []
        if action == UNSUPPRESS:
            lifted = state.person_requests(person.nodes)
            if not lifted:
                raise NotSuppressed("this person is not suppressed")
            for r in lifted:  # lift every request of the person, whatever it named
                person.nodes |= set(r.identifiers)
        at = self.now()
        request = Request(
            request_id=Request.new_id(),
            action=action,
            identifiers=tuple(sorted(person.nodes)),
            person_ids=tuple(sorted(person.pids)),
            actor=actor,
            reason=reason,
            status=PENDING if action == DELETE else DONE,
            requested_at=at,
            updated_at=at,
        )
        offset = self.log.append(request)  # returns once acknowledged: in force from now
        request = replace(request, seq=offset)
        write_audit(self.lake_dir, request, self.key)
        if action == UNSUPPRESS:
            self._readmit(request, lifted)
        if action == DELETE:
            with exclusive(self.lake_dir):
                request = self.deleter().run(request)
        return request

    def _readmit(self, request: Request, lifted: list[Request]) -> None:
        """A deleted person unsuppressed: off the purge list, back into the map."""
        deleted = {r.request_id for r in lifted if r.action == DELETE}
        if not deleted:
            return
        with exclusive(self.lake_dir):
            purge.remove(self.lake_dir, deleted)
        if self.log.has_topic(self.log.links_topic):
            self.log.forget(request.request_id, list(request.identifiers), undo=True)

    def resume(self, wait: bool = True) -> list[Request]:
        """Finish what crashes left: missing audit rows, unfinished deletions."""
        with exclusive(self.lake_dir, wait=wait):
            state = self.state()
            audited = audited_states(self.lake_dir)
            for req in state.requests.values():
                if req.status not in audited.get(req.request_id, set()):
                    write_audit(self.lake_dir, req, self.key)
            deleter = self.deleter()
            return [deleter.run(req) for req in state.unfinished()]


def _shown(node: str) -> str:
    kind, _, value = node.partition(":")
    if kind in ("phone", "email"):
        return "(given in clear, hashed)"
    return repr(value)


__all__ = ["DELETE", "SUPPRESS", "UNSUPPRESS", "NotSuppressed", "Privacy", "UnknownIdentifier"]
