"""Model families behind one interface: see `vistune.models.base`."""
