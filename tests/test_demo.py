"""The README's first command: the demo through the real HTTP path, as a user runs it."""

from __future__ import annotations

from gateway.demo import run_demo


async def test_demo_stops_the_linked_ring_and_spares_legitimate_accounts() -> None:
    result = await run_demo("policies/examples/6-linked-ring.yaml")
    ring, legit = result.rows["linked ring"], result.rows["legitimate"]
    assert legit["admitted"] == legit["sent"] == 240
    assert ring["account scope"] == ring["organization scope"] == 0
    # The ring's 40 accounts are 40 organizations on one card: from its third account on,
    # the cluster shares multi-organization-cluster's 20k output tokens a day. The mock
    # answers 60 tokens (200 reserved), so about 20,000 / 60 = 330 get through, plus a few
    # counted before the cluster reached three organizations or while a replica's cached
    # count lagged (up to 1.5 s); in-flight reservations can hold back a few at the end.
    assert 300 < ring["admitted"] < 450
    assert ring["cluster scope"] == ring["sent"] - ring["admitted"]
    rendered = result.render()
    assert "refused (cluster scope)" in rendered
    assert "Legitimate accounts: 0 of 240 requests refused." in rendered
