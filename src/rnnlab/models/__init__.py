"""Recurrent models: plain nn.Modules with the interface of ``rnnlab.models.base``, one file per family."""
