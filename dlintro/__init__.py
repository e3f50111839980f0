"""dlintro: train image classifiers from a YAML file."""

__version__ = "0.1.0"
