"""The `src` command line and what it drives: the local services, doctor, compare, the
preflight checks. The pipeline never imports this package."""
