"""Characters imported from the datasets of other projects: one module per project."""
