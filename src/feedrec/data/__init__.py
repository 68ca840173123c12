"""Events in: file sources, validation, the simulator and the event store."""
