"""The torch networks the engine's torch backend runs: the CV-UNet family and U²-Net-p, and their
checkpoints. Importing this package imports torch; the engine imports it only when the torch
backend is asked for (edge boxes may not have torch). Training code lives in distill/."""
