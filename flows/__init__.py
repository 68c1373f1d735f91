"""Prefect flows that only wire tasks, the `gnnrec` CLI and the deployments."""
