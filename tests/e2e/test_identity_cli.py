"""One ID end to end: two worker processes, `trackflow produce`, `trackflow report trail`."""

from __future__ import annotations

import orjson

from pipeline.contract.pii import PiiHasher
from pipeline.identity.graph import IdentityGraph
from pipeline.identity.rules import load_identity_rules
from pipeline.identity.stitching import Stitcher
from tests import population
from tests.support import Deployment, wait_for


def reference_persons(pop: population.Population, secret: str) -> dict[str, str | None]:
    """What one in-memory graph, fed every link at once, says about each event."""
    rules, hasher = load_identity_rules(), PiiHasher(secret)
    graph = IdentityGraph(rules)
    links = []
    for e in pop.events:
        ids = dict(e.get("identities") or {})
        if "phone" in ids:
            ids["phone"] = hasher.hash_phone(ids["phone"])
        for a, b in rules.links(rules.identifiers(e.get("user_id"), e.get("anonymous_id"), ids)):
            links.append((a, b, e["event_time"]))
    graph.add(links)
    stitcher = Stitcher(rules, graph, 3_600_000)
    return {
        e["event_id"]: stitcher.resolve(e.get("user_id"), e.get("anonymous_id")) for e in pop.events
    }


def test_two_workers_give_the_same_persons_as_one(deployment: Deployment) -> None:
    pop = population.build(members=20, visitors=6, shared=2, borrowed_openids=2, seed=11)
    workers = [deployment.start_worker(), deployment.start_worker()]
    deployment.wait_assigned(workers)
    deployment.produce(pop.lines(seed=9, batch=3))
    expected = reference_persons(pop, deployment.env["TRACKFLOW_PII_SECRET"])

    def settled() -> bool:
        rows = deployment.query("SELECT event_id, person_id FROM events_resolved")
        return {r["event_id"]: r["person_id"] for r in rows} == expected

    deployment.wait_settled(settled, timeout=150)
    predicted = {k: v for k, v in expected.items() if v is not None}
    assert population.pairwise(predicted, pop.truth) == (1.0, 1.0)
    # Both workers hold the whole map, not only the one that is the writer.
    persons = len(set(pop.truth.values()))
    wait_for(
        lambda: all(w.metric("trackflow_identity_persons") == persons for w in workers),
        timeout=30,
        what="every worker's copy of the map",
    )

    # The trail of a member found by the phone number in clear.
    member, phone = sorted(pop.phones.items())[0]
    out = deployment.run("report", "trail", phone, "--type", "phone", "--format", "json").stdout
    trail = orjson.loads(out)
    assert trail["person_id"] == load_identity_rules().person_id(f"user_id:{member}")
    mine = sorted(i for i, who in pop.truth.items() if who == member)
    assert sorted(e["event_id"] for e in trail["events"]) == mine
    times = [e["event_time"] for e in trail["events"]]
    assert times == sorted(times)
    kinds = {i["identifier_type"] for i in trail["identifiers"]}
    assert kinds >= {"user_id", "anonymous_id", "openid", "phone"}
    assert phone.encode() not in out

    # The same person from another of its identifiers, and a clear error for a stranger.
    device = next(e["anonymous_id"] for e in pop.events if e.get("user_id") == member)
    by_device = orjson.loads(deployment.run("report", "trail", device, "--format", "json").stdout)
    assert by_device["person_id"] == trail["person_id"]
    missing = deployment.run("report", "trail", "nobody-at-all", check=False)
    assert missing.returncode == 1
    assert b"no person found" in missing.stderr
