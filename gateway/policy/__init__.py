"""Policy files: the schema, loading with positions, and the compiled model the engine reads."""
