"""The pipeline's steps as plain, Prefect-free functions (ingest, graphs, train, tune, evaluate, register)."""
