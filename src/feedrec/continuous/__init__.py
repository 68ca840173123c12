"""Continuous training: the retraining cycle (trigger, retrain, gate, shadow, canary, promote)."""
