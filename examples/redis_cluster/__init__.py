"""Two gateway processes behaving as one over Redis."""
