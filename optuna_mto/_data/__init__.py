"""Which rows each split trains and validates on: splitters, plans, fingerprints."""
