"""Simulated attacks on a run: which clients are malicious and what they do to their data or updates."""
