"""Catalog data: schema, price parsing, the sample generator, ingestion, splits, loading."""
