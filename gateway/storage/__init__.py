"""Counter stores: the only package that imports ``redis``.

``connection.open_store(uri)`` → ``budget_memory.MemoryStore`` or ``budget_redis.RedisStore``,
both implementing ``gateway.budget.store.CounterStore``; their Lua lives in ``lua/``.
"""
