"""Teacher checkpoints and reference files behind URLs: verified, resumable downloads (``teachers.download``)."""
