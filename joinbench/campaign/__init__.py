"""The GPU campaign: every GPU window continues what the repository ships and leaves it better.

``window`` runs on the GPU machine (train from the shipped state, evaluate, keep predictions),
``pack`` fits what it made into the device's return limits, ``ship`` checks, gates, installs,
scores and reports it here, and ``history`` keeps one record per window. Commands:
``joinbench campaign window|pack|ship|history`` (``campaign/cli.py``); the scripts
``scripts/gpu_campaign.sh`` and ``scripts/ship_campaign.sh`` wrap them.
"""
