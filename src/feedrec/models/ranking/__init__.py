"""Rankers: score (user, candidate) rows from features. Contract: fit(train, valid) / predict(features)."""
