"""Stage functions of each tier (called by the CLI that dvc.yaml runs)."""
