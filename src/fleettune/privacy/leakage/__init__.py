"""What an attacker learns from a trained run: membership of training samples, tokens behind cut activations."""
