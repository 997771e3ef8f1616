"""The Parquet lake: crash-safe writers, the lake's table schemas and DuckDB views."""
