"""Pure domain: models and rules, no I/O, imports nothing from the rest of the package."""
