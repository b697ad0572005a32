"""Distillation: the CV-UNet family in torch, datasets, losses and the resumable trainer."""
