"""The MLflow layer of sparse-ticket: entry points, the artifact contract and presets."""
