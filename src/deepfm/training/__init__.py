"""The training loop and what it needs: optimisers, metrics, checkpoints."""
