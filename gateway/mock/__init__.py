"""A fake Anthropic and OpenAI API for demos, tests and benchmarks (``gateway mock-upstream``).

Routes, in the real APIs' shapes; ✱ marks the ones that write an answer, streamed as SSE
when the body says ``"stream": true`` (Embeddings excepted, as in the real API):

    POST   /v1/messages ✱                      Anthropic Messages
    POST   /v1/messages/count_tokens           {"input_tokens": N}, as the message would count
    POST   /v1/messages/batches ✱              a message_batch, "in_progress"
    GET    /v1/messages/batches                a page of batches, newest first (?limit=)
    GET    /v1/messages/batches/{id}           the batch, "ended" (the mock ends batches at once)
    DELETE /v1/messages/batches/{id}
    GET    /v1/messages/batches/{id}/results   JSONL: one result per request, a message with usage
    POST   /v1/messages/batches/{id}/cancel    "canceling"; results then say "canceled"
    POST   /v1/complete ✱                      Anthropic legacy Text Completions (no usage)
    POST   /v1/chat/completions ✱              OpenAI Chat Completions
    POST   /v1/responses ✱                     OpenAI Responses; "background": true answers
                                               "queued" at once
    GET    /v1/responses/{id}                  the response, completed
    DELETE /v1/responses/{id}
    POST   /v1/responses/{id}/cancel
    GET    /v1/responses/{id}/input_items
    POST   /v1/completions ✱                   OpenAI legacy Completions (max_tokens 16 if unset)
    POST   /v1/embeddings ✱                    eight numbers per input
    GET    /v1/models, /v1/models/{id}         OpenAI's list and model shapes

An id the mock never made (a batch, a response, a model) answers as if it existed. Any
other path is 404, a wrong method 405, in the shape of the API the path belongs to
(Anthropic's under /v1/messages and /v1/complete, OpenAI's elsewhere), as errors are.

Every answer is ``MockConfig.output_tokens`` long unless the request's cap is lower
(``max_tokens``, ``max_completion_tokens``, ``max_output_tokens``,
``max_tokens_to_sample``) and ``MockConfig.ignore_cap`` is off; a prompt counts its
strings at 4 bytes a token. Request headers inject failures on the ✱ routes:

    x-mock-status: 503       answer with that status, in the API's error shape
    x-mock-break-after: 3    cut the connection after 3 streamed deltas
    x-mock-latency: 2.5      seconds before the answer starts (overrides the config)

Control routes, never in the request log:

    GET  /mock/stats   ``active`` ✱ requests now and, since the last reset, ``completed``,
                       ``cancelled`` (the client left first) and ``broken`` (cut by
                       x-mock-break-after): how tests see whether the gateway cancelled its
                       upstream request
    GET  /mock/log     every other HTTP request that reached the mock, oldest first (the last
                       10,000), recorded before routing so 404s and 405s are there too:
                       [{"method": "GET", "target": "/v1/models?x=1",
                         "x-account-id": ["acct-1"], "x-organization-id": []}]
                       ``target`` is the raw path and query as received (latin-1), the
                       header lists every value sent, in order
    GET  /mock/ledger  what was really served, one entry per ✱ request, oldest first (the
                       last 10,000): the identity headers it carried, the input and output
                       tokens served (a stream: the deltas written before it was cut or its
                       client left), the status, the outcome (active, completed, cancelled,
                       broken, failed) and when it started and ended (see ``mock.ledger``):
                       [{"method": "POST", "path": "/v1/messages", "x-account-id": ["a"],
                         "x-organization-id": [], "stream": true, "status": 200,
                         "outcome": "broken", "input_tokens": 7, "output_tokens": 3,
                         "started_at": 1767225600.1, "ended_at": 1767225600.2}]
    POST /mock/reset   zeroes the counts and clears the log, ledger, batches and responses
"""

from __future__ import annotations

from gateway.mock.app import create_mock_app, serve_mock
from gateway.mock.base import MockConfig, MockStats

__all__ = ["MockConfig", "MockStats", "create_mock_app", "serve_mock"]
