"""Features, declared once (definitions), built offline point-in-time (offline), served online (online)."""
