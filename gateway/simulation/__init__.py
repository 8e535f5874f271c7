"""``gateway simulate``: synthetic legitimate traffic and a distillation campaign, replayed
through the real budget engine to measure what cluster budgets stop and whom they hurt."""
