"""The fleettune command line."""
