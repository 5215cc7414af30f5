"""Evaluation with kaiko's eva (the Midnight paper's framework): an eva backbone entry point for pathfm
backbones (:mod:`.backbone`), an eva dataset over pathfm's tile tasks (:mod:`.tile_dataset`), the eva YAML
config for eva's pathology tasks (:mod:`.config`), running it and collecting eva's results into pathfm's
evaluation rows (:mod:`.results`). Needs ``pip install 'pathfm[eva]'``; see docs/eva.md."""
