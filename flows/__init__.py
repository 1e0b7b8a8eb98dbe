"""Prefect wiring of hyperflow: the search flow, the command line, deployments."""
