"""LightningModules: one base for every comparison, subclasses for families that train differently."""
