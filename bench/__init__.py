"""`python -m bench`: nordlys against the original project's way of sorting, on a small CPU."""
