"""Time ranges over merged and raw profiles; diff of two ranges."""
