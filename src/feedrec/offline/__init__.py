"""The offline world: split, sample, train, evaluate."""
