"""rnnlab: compare recurrent neural networks under identical conditions."""

__version__ = "0.1.0"
