"""The README's first command: the demo through the real HTTP path, as a user runs it."""

from __future__ import annotations

from gateway.demo import run_demo


async def test_demo_stops_the_linked_ring_and_spares_legitimate_accounts() -> None:
    result = await run_demo("policies/distillation-defense.yaml")
    ring, legit = result.rows["linked ring"], result.rows["legitimate"]
    assert legit["admitted"] == legit["sent"] == 240
    assert ring["account scope"] == ring["organization scope"] == 0
    # 4,000 requests paced over 20 s against 2,000 requests a minute for the cluster: the
    # bucket's capacity plus what drains in 20 s, about 2,650, gets through.
    assert 2400 < ring["admitted"] < 2900
    assert ring["cluster scope"] == ring["sent"] - ring["admitted"]
    rendered = result.render()
    assert "refused (cluster scope)" in rendered
    assert "Legitimate accounts: 0 of 240 requests refused." in rendered
