"""srgnn-pipeline."""
