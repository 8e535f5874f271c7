"""The budget engine: reserve at admission, settle at the end, over a counter store."""
