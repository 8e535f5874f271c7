"""What a simulation counts and logs: a capped answer is what the cap let through."""

from __future__ import annotations

from gateway.budget.decision import Decision, Subject
from gateway.metering import RequestEstimate, Usage
from gateway.replay import Exchange
from gateway.simulation.campaign import START
from gateway.simulation.run import log_line
from gateway.simulation.tally import SimTally


def _exchange(request_id: str, output: int) -> Exchange:
    return Exchange(
        request_id=request_id,
        time=START + 10.0,
        duration_s=5.0,
        subject=Subject("camp-1", "camp-org-1", None, {}),
        signals=(),
        estimate=RequestEstimate("model-large", 300, 16_384, stream=True, shapeable=True),
        usage=Usage(300, output),
    )


def test_a_capped_answer_counts_only_the_output_the_cap_let_through() -> None:
    tally = SimTally(days=1)
    tally.add(_exchange("c1", 5_000), Decision("c1", admitted=True, capped_output=1_000))
    tally.add(_exchange("c2", 400), Decision("c2", admitted=True, capped_output=1_000))
    tally.add(_exchange("c3", 2_000), Decision("c3", admitted=True))
    campaign = tally.campaign
    assert campaign.output_offered == 7_400  # what the campaign asked the model for
    assert campaign.output_admitted == 1_000 + 400 + 2_000
    assert tally.per_day["campaign_admitted"][0] == 3 * 300 + 1_000 + 400 + 2_000
    assert tally.per_day["campaign_offered"][0] == 3 * 300 + 7_400


def test_a_capped_answer_is_logged_as_live_logs_it() -> None:
    """The upstream was sent the lower cap: the log's usage is what it could generate,
    the reservation what the client asked for."""
    exchange = _exchange("c1", 5_000)
    capped = log_line(exchange, exchange.subject, Decision("c1", True, capped_output=1_000))
    whole = log_line(exchange, exchange.subject, Decision("c1", True))
    assert capped["usage"]["output_tokens"] == 1_000
    assert whole["usage"]["output_tokens"] == 5_000
    assert capped["reserved"]["output_tokens"] == 16_384
