"""Metrics with update/reset/compute: segmentation, detection, latency."""
