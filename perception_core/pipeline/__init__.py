"""Per-frame pipeline: letterbox, pure stage functions, StageTimer and the Pipeline."""
