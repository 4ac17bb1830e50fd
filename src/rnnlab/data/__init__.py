"""Datamodules, one module per modality; the contract is in ``rnnlab.data.base``."""
