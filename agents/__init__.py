"""Faust agents, one module per pipeline stage; each exposes ``register(app, ctx)``."""
