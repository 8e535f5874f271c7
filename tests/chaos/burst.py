"""The mixed burst of scenarios a and b: 600 requests, four groups, each bound by another limit.

| group | accounts | org | shots | what binds |
|---|---|---|---|---|
| R | acct-r1..r4, 50 JSON each | org-r | 200 | the org's 100 requests/day (4 x 40 > 100) |
| S | acct-s1, 60 JSON | org-s | 60 | the account's 40 requests/day |
| T | acct-t1, acct-t2, 100 each | org-t | 200 | tokens (2,500 an account, 4,000 the org) |
| C | acct-c1, acct-c2, 70 each | org-c | 140 | concurrency (acct-c1: 2, org-c: 3) |

T mixes whole streams, clients that leave mid-stream, upstream 500s, streams the upstream
cuts and JSON answers; C mixes streams and clients that leave. R and S resend after a
concurrency refusal (so their request budgets are driven exactly to the limit); T and C
take a refusal as final. The shots are shuffled with a fixed seed.
"""

from __future__ import annotations

import random
from collections import Counter

from tests.chaos.harness import Harness
from tests.chaos.ledger import CUT_SLACK_TOKENS, Ledger, Limits
from tests.chaos.load import Kind, Outcome, Shot

# The mock writes 120 tokens an answer, a delta every 3 ms (a whole stream: about 0.4 s).
OUTPUT_TOKENS = 120
TOKEN_DELAY = 0.003

POLICY = """\
policies:
  - name: per-account
    scope: account
    limits: {requests: 40/day, tokens: 2500/day, concurrent: 16}
    overrides:
      acct-c1: {concurrent: 2}
  - name: per-org
    scope: organization
    limits: {requests: 100/day, tokens: 4000/day, concurrent: 24}
    overrides:
      org-c: {concurrent: 3}
"""

ACCOUNT = Limits(requests=40, tokens=2500, concurrent=16)
ORG = Limits(requests=100, tokens=4000, concurrent=24)
ACCOUNTS = {
    **{f"acct-r{i}": ACCOUNT for i in range(1, 5)},
    "acct-s1": ACCOUNT,
    "acct-t1": ACCOUNT,
    "acct-t2": ACCOUNT,
    "acct-c1": Limits(requests=40, tokens=2500, concurrent=2),
    "acct-c2": ACCOUNT,
}
ORGS = {"org-r": ORG, "org-s": ORG, "org-t": ORG, "org-c": Limits(100, 4000, 3)}
SCOPES = [("account", a) for a in ACCOUNTS] + [("organization", o) for o in ORGS]

_T_KINDS = [Kind.STREAM] * 4 + [Kind.DISCONNECT] * 2 + [Kind.ERROR] * 2 + [Kind.CUT] * 1
_T_KINDS += [Kind.JSON]
_C_KINDS = [Kind.STREAM] * 4 + [Kind.DISCONNECT]


def shots(seed: int = 7) -> list[Shot]:
    plan: list[Shot] = []
    for i in range(1, 5):
        plan += [Shot(f"acct-r{i}", "org-r", max_tokens=8, retry_busy=True)] * 50
    plan += [Shot("acct-s1", "org-s", max_tokens=8, retry_busy=True)] * 60
    for account in ("acct-t1", "acct-t2"):
        plan += [Shot(account, "org-t", _T_KINDS[i % len(_T_KINDS)], 400) for i in range(100)]
    for account in ("acct-c1", "acct-c2"):
        plan += [Shot(account, "org-c", _C_KINDS[i % len(_C_KINDS)], 30) for i in range(70)]
    random.Random(seed).shuffle(plan)
    return plan


# What a client may see, by kind: an answer, a refusal, the upstream's 500; a stream the
# upstream cut may also end without a status or as a 502 (no byte came).
EXPECTED: dict[Kind, set[int | None]] = {
    Kind.JSON: {200, 429},
    Kind.STREAM: {200, 429},
    Kind.DISCONNECT: {200, 429},
    Kind.ERROR: {500, 429},
    Kind.CUT: {200, 429, 502, None},
}


def unexpected(outcomes: list[Outcome]) -> Counter[str]:
    return Counter(
        f"{o.shot.kind.value} → {o.status} {o.error[:60]}".strip()
        for o in outcomes
        if o.status not in EXPECTED[o.shot.kind]
    )


async def check(chaos: Harness, outcomes: list[Outcome]) -> None:
    """Everything scenarios a and b require once the burst is over."""
    replica = chaos.replicas[0]
    await chaos.settled(replica, SCOPES)
    ledger = await chaos.ledger()
    problems = ledger.violations("account", ACCOUNTS) + ledger.violations("organization", ORGS)
    assert problems == [], problems
    assert unexpected(outcomes) == Counter(), "statuses nobody should see"
    # Where requests bind, exactly the limit was served, and the gateway says so too.
    assert ledger.requests("organization", "org-r") == 100
    assert ledger.requests("account", "acct-s1") == 40
    assert (await chaos.usage(replica, "organization", "org-r"))["requests"]["used"] == 100
    assert (await chaos.usage(replica, "account", "acct-s1"))["requests"]["used"] == 40
    # Tokens and concurrency did bind: some of T and C were refused.
    for group in ("acct-t", "acct-c"):
        refused = [o for o in outcomes if o.shot.account.startswith(group) and o.refused]
        assert refused, f"no {group}* request was refused: that limit never bound"
    await _charged_at_least_served(chaos, ledger)


async def _charged_at_least_served(chaos: Harness, ledger: Ledger) -> None:
    """The gateway charged each T account at least the tokens really served (a cut stream
    may be short by ``CUT_SLACK_TOKENS``): what it under-charges it would admit again."""
    spend = ledger.spend("account")
    for account in ("acct-t1", "acct-t2"):
        used = (await chaos.usage(chaos.replicas[0], "account", account))["tokens"]["used"]
        served = spend[account]
        assert used + CUT_SLACK_TOKENS * served.cut_streams >= served.tokens, (
            f"{account}: charged {used} tokens, served {served.tokens}"
        )
