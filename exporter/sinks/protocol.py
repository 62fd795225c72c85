"""The live stream's wire contract, shared by the server and its clients (`perfpulse watch`).

Clients import this module alone: nothing here pulls in the server.
"""

from __future__ import annotations

PATH = "/api/ws/metrics"
# `Sec-WebSocket-Protocol: bearer, <token>` carries the token outside the URL.
SUBPROTOCOL = "bearer"

# Close codes. 1008 means "your credentials are refused": a client goes back to login.
POLICY_VIOLATION = 1008
INVALID_PAYLOAD = 1007
MESSAGE_TOO_BIG = 1009
# The server cannot serve the stream now (database down, client too slow): retry later.
TRY_AGAIN_LATER = 1013
TOO_MANY_MESSAGES = 4429
