"""WebSocket signaling server and client for voip-codec calls (no torch needed)."""
