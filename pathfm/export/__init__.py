"""Models that leave pathfm: ``pathfm export`` (timm, Hugging Face, DINOv2 hub layouts) and model cards."""
