"""Stage 5, evaluate: verification metrics, identification, plots."""
