"""How audio gets in and out of Nabu: WAV files (`nabu talk`), the phone WebSocket, the mic."""
