"""Segmenters (owned by the segmentation work; placeholder so the package imports)."""
