"""Distillation training: the Uni-Instruct loop and atomic checkpoints."""
