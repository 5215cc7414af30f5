"""pathfm: an ablation and sweep harness for pathology foundation models (the Midnight recipe)."""

__version__ = "0.1.0"
