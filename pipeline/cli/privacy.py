"""``trackflow privacy``: suppress, delete, unsuppress a person; list requests (DESIGN 15).

Exit codes: 0 done; 2 bad input or an identifier no person has (nothing changed); 1 the
broker did not acknowledge (run ``privacy status``: the request may be recorded).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pipeline.cli.app import Broker, DataDir, Dev, TopicPrefix, _opt, settings_from

if TYPE_CHECKING:
    from pipeline.privacy.service import Privacy
    from pipeline.settings import Settings

app = typer.Typer(
    help="Privacy requests: suppression and deletion of a whole person, their status. "
    "Exit 0 done, 2 bad input or an identifier no person has (nothing changed), 1 the "
    "broker did not acknowledge (see privacy status). docs/privacy.md.",
    no_args_is_help=True,
)

UserId = Annotated[str | None, _opt("PRIVACY_USER_ID", "The person's member id (user_id)")]
AnonymousId = Annotated[
    str | None, _opt("PRIVACY_ANONYMOUS_ID", "One of the person's device ids (anonymous_id)")
]
Phone = Annotated[
    str | None, _opt("PRIVACY_PHONE", "The person's phone, in clear (normalised and hashed)")
]
Email = Annotated[
    str | None, _opt("PRIVACY_EMAIL", "The person's e-mail, in clear (normalised and hashed)")
]
Reason = Annotated[str | None, _opt("PRIVACY_REASON", "Why (kept in the audit)")]
Actor = Annotated[str | None, _opt("ACTOR", "Who asks, for the audit [default: the OS user]")]
Format = Annotated[str, _opt("FORMAT", "table | json")]

COLUMNS = ["request_id", "action", "status", "rows_removed", "actor", "reason", "identifiers"]


def _fail(command: str, message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"trackflow privacy {command}: {message}", err=True)
    return typer.Exit(code)


def _actor(given: str | None) -> str:
    if given:
        return given
    import getpass
    import os

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def _open(command: str, settings: Settings) -> Privacy:
    """The service on the settings' broker and lake; the topic is created if missing."""
    from confluent_kafka import KafkaException

    from pipeline.identity.rules import load_identity_rules
    from pipeline.lake.views import connect
    from pipeline.names import TOPIC_LINKS, TOPIC_PRIVACY
    from pipeline.privacy.kafka import COMPACTED, RequestLog
    from pipeline.privacy.service import Privacy
    from pipeline.runtime.kafka_admin import ensure_topic
    from pipeline.runtime.kafka_security import KafkaCluster, KafkaConfigError
    from pipeline.settings import MissingPiiKey

    try:
        key = settings.pii_key()
        cluster = KafkaCluster.from_settings(settings)
        topic = settings.topic(TOPIC_PRIVACY)
        ensure_topic(cluster, topic, 1, config=COMPACTED)
    except (MissingPiiKey, KafkaConfigError) as exc:
        raise _fail(command, str(exc)) from None
    except KafkaException as exc:
        raise _fail(command, f"cannot reach the broker, nothing changed: {exc}", 1) from None
    log = RequestLog(cluster, topic, settings.topic(TOPIC_LINKS))
    return Privacy(
        settings.lake_dir,
        lambda: connect(settings.data_dir),
        load_identity_rules(settings.identity_rules),
        log,
        key,
        log.read_all,
    )


def _act(command: str, given: dict[str, str | None], reason: str | None, **opts: Any) -> None:
    import contextlib

    from pipeline.contract.errors import Rejected
    from pipeline.contract.pii import PiiHasher
    from pipeline.privacy.deletion import Busy
    from pipeline.privacy.kafka import BrokerUnavailable
    from pipeline.privacy.resolve import identifier_node
    from pipeline.privacy.service import NotSuppressed, UnknownIdentifier
    from pipeline.settings import MissingPiiKey

    fmt = opts.pop("format")
    if fmt not in ("table", "json"):
        raise _fail(command, "--format must be table or json")
    named = {k: v for k, v in given.items() if v is not None}
    if len(named) != 1:
        raise _fail(command, "give exactly one of --user-id, --anonymous-id, --phone, --email")
    ((kind, value),) = named.items()
    if not value.strip():
        raise _fail(command, f"--{kind.replace('_', '-')} is empty")
    actor = _actor(opts.pop("actor"))
    settings = settings_from(**opts)
    try:  # bad input ends here, before the broker is asked anything
        node = identifier_node(kind, value, PiiHasher(settings.pii_key()))
    except Rejected as exc:
        raise _fail(command, f"--{kind}: {exc.detail}") from None
    except MissingPiiKey as exc:
        raise _fail(command, str(exc)) from None
    privacy = _open(command, settings)
    try:
        # First finish what an earlier, killed command left, unless another process is on
        # it: a suppression must not wait for a deletion to end.
        with contextlib.suppress(Busy):
            privacy.resume(wait=False)
        request = privacy.submit(command, node, actor, reason)
    except (UnknownIdentifier, NotSuppressed) as exc:
        raise _fail(command, f"{exc}; nothing changed") from None
    except BrokerUnavailable as exc:
        raise _fail(command, f"{exc} (see trackflow privacy status)", 1) from None
    _print([_shown(request, privacy.key)], fmt)


def _shown(request: Any, key: str) -> dict[str, Any]:
    from datetime import UTC, datetime

    from pipeline.privacy.requests import shown_identifiers

    def iso(ms: int) -> str | None:
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat() if ms else None

    return {
        "request_id": request.request_id,
        "action": request.action,
        "status": request.status,
        "rows_removed": request.rows_removed,
        "removed_by_table": request.removed_by_table,
        "actor": request.actor,
        "reason": request.reason,
        "identifiers": shown_identifiers(key, request.identifiers),
        "requested_at": iso(request.requested_at),
        "updated_at": iso(request.updated_at),
    }


def _print(rows: list[dict[str, Any]], fmt: str) -> None:
    from pipeline.cli.output import emit

    if fmt == "json":
        from pipeline.lake.views import to_json_object

        sys.stdout.write(to_json_object(rows) + "\n")
        return
    table = [{**r, "identifiers": len(r["identifiers"])} for r in rows]
    emit(COLUMNS, table, fmt)


@app.command("suppress")
def suppress(
    user_id: UserId = None,
    anonymous_id: AnonymousId = None,
    phone: Phone = None,
    email: Email = None,
    reason: Reason = None,
    actor: Actor = None,
    broker: Broker = None,
    data_dir: DataDir = None,
    topic_prefix: TopicPrefix = None,
    dev: Dev = None,
    format: Format = "table",
) -> None:
    """Drop the person's new events before storage, on every worker, from when this
    returns: every identifier One ID links to them, now or later. Counted, never
    dead-lettered."""
    ids = {"user_id": user_id, "anonymous_id": anonymous_id, "phone": phone, "email": email}
    _act("suppress", ids, reason, actor=actor, broker=broker, data_dir=data_dir,
         topic_prefix=topic_prefix, dev=dev, format=format)  # fmt: skip


@app.command("delete")
def delete(
    user_id: UserId = None,
    anonymous_id: AnonymousId = None,
    phone: Phone = None,
    email: Email = None,
    reason: Reason = None,
    actor: Actor = None,
    broker: Broker = None,
    data_dir: DataDir = None,
    topic_prefix: TopicPrefix = None,
    dev: Dev = None,
    format: Format = "table",
) -> None:
    """Suppress the person, then remove every row of theirs from the lake (events, dlq,
    identities, identity_merges, member tables) and from every worker's identity map.
    Rollups keep their values. Returns when done; a killed run is finished by the next
    privacy command or by a worker."""
    ids = {"user_id": user_id, "anonymous_id": anonymous_id, "phone": phone, "email": email}
    _act("delete", ids, reason, actor=actor, broker=broker, data_dir=data_dir,
         topic_prefix=topic_prefix, dev=dev, format=format)  # fmt: skip


@app.command("unsuppress")
def unsuppress(
    user_id: UserId = None,
    anonymous_id: AnonymousId = None,
    phone: Phone = None,
    email: Email = None,
    reason: Reason = None,
    actor: Actor = None,
    broker: Broker = None,
    data_dir: DataDir = None,
    topic_prefix: TopicPrefix = None,
    dev: Dev = None,
    format: Format = "table",
) -> None:
    """Lift the person's suppression (and a deletion's): their new events are stored
    again. Deleted rows stay deleted."""
    ids = {"user_id": user_id, "anonymous_id": anonymous_id, "phone": phone, "email": email}
    _act("unsuppress", ids, reason, actor=actor, broker=broker, data_dir=data_dir,
         topic_prefix=topic_prefix, dev=dev, format=format)  # fmt: skip


@app.command("status")
def status(
    broker: Broker = None,
    data_dir: DataDir = None,
    topic_prefix: TopicPrefix = None,
    dev: Dev = None,
    format: Format = "table",
) -> None:
    """Every privacy request with its latest state, oldest first."""
    from pipeline.privacy.kafka import BrokerUnavailable

    if format not in ("table", "json"):
        raise _fail("status", "--format must be table or json")
    settings = settings_from(broker=broker, data_dir=data_dir, topic_prefix=topic_prefix, dev=dev)
    privacy = _open("status", settings)
    try:
        state = privacy.state()
    except BrokerUnavailable as exc:
        raise _fail("status", str(exc), 1) from None
    requests = sorted(state.requests.values(), key=lambda r: (r.seq or 0, r.request_id))
    _print([_shown(r, privacy.key) for r in requests], format)
