"""Candidate retrieval models: narrow the catalogue to what a user may want."""
