"""``action: cap``: a request asking for more output than a token budget has left is
admitted with the output that fits, when that is at least the policy's minimum."""

from __future__ import annotations

from dataclasses import replace

from gateway.budget.engine import BudgetEngine
from gateway.budget.holder import PolicyHolder
from gateway.budget.store import CounterStore
from gateway.metering import RequestEstimate, Usage
from gateway.policy.model import Action, Metric, Policy, Scope, Unit
from tests.budget.helpers import Clock, limit, policy, policy_set, subject


def capping(*limits: object, action: Action = Action.CAP, minimum: int = 256) -> Policy:
    base = policy("p", *limits)  # type: ignore[arg-type]
    return replace(base, action=action, min_output_tokens=minimum)


def asking(output: int, input_tokens: int = 100) -> RequestEstimate:
    return RequestEstimate("m", input_tokens, output, stream=False, shapeable=True)


async def test_a_request_too_long_for_what_is_left_is_admitted_shorter(
    store: CounterStore,
) -> None:
    eng = BudgetEngine(
        store,
        PolicyHolder(policy_set(capping(limit(Metric.TOKENS, 2000, Unit.DAY)))),
        clock=Clock(),
    )
    first = await eng.reserve("r1", subject(), asking(1000))
    second = await eng.reserve("r2", subject(), asking(1000))
    third = await eng.reserve("r3", subject(), asking(1000))
    assert first.admitted and first.capped_output is None
    assert second.admitted and second.capped_output == 2000 - 1100 - 100  # 800 fit
    assert not third.admitted  # nothing left: 0 < the 256 minimum
    await eng.settle("r2", Usage(input_tokens=100, output_tokens=800))
    assert [s.remaining for s in await eng.usage(Scope.ACCOUNT, "a1")] == [0]


async def test_below_the_minimum_or_under_refuse_it_is_refused(store: CounterStore) -> None:
    tokens = limit(Metric.TOKENS, 1600, Unit.DAY)
    for minimum, action, admitted in ((256, Action.CAP, True), (500, Action.CAP, False)):
        eng = BudgetEngine(
            store,
            PolicyHolder(policy_set(capping(tokens, action=action, minimum=minimum))),
            clock=Clock(),
        )
        assert (await eng.reserve(f"a{minimum}", subject(f"x{minimum}"), asking(1000))).admitted
        shaped = await eng.reserve(f"b{minimum}", subject(f"x{minimum}"), asking(1000))
        assert shaped.admitted is admitted  # 1600 - 1100 - 100 = 400 left for output
    refusing = BudgetEngine(
        store, PolicyHolder(policy_set(capping(tokens, action=Action.REFUSE))), clock=Clock()
    )
    assert (await refusing.reserve("c1", subject("y"), asking(1000))).admitted
    assert not (await refusing.reserve("c2", subject("y"), asking(1000))).admitted


async def test_a_refusal_by_anything_but_tokens_is_not_shaped(store: CounterStore) -> None:
    both = capping(limit(Metric.TOKENS, 10_000, Unit.DAY), limit(Metric.REQUESTS, 1, Unit.DAY))
    eng = BudgetEngine(store, PolicyHolder(policy_set(both)), clock=Clock())
    assert (await eng.reserve("r1", subject(), asking(100))).admitted
    refused = await eng.reserve("r2", subject(), asking(100))
    assert not refused.admitted and refused.capped_output is None


async def test_an_unshapeable_request_is_refused_whole(store: CounterStore) -> None:
    eng = BudgetEngine(
        store,
        PolicyHolder(policy_set(capping(limit(Metric.TOKENS, 2000, Unit.DAY)))),
        clock=Clock(),
    )
    assert (await eng.reserve("r1", subject(), asking(1000))).admitted
    batch = replace(asking(1000), shapeable=False)
    assert not (await eng.reserve("r2", subject(), batch)).admitted
