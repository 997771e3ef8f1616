"""Faust table definitions holding the pipeline's recoverable state."""
