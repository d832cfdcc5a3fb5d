"""Pure ``nn.Module`` architectures, one file per family. Hydra ``_target_`` is the registry."""
