"""How messages move and how time and memory are measured."""
