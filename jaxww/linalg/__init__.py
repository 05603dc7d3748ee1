"""The linalg stage."""
