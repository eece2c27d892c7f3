"""What runs the stages without being one: the content-addressed store, stage keys and
declared config reads, model references, MLflow tracking and the run layout, the environment
defaults, Ray shards and accelerate launches, and the Prefect task factory (common)."""
