"""One module per comparison; each exposes ``run(ctx) -> dict`` returning side-by-side results."""
