#!/usr/bin/env bash
# File-to-file call between two processes on this machine (see README.md).
set -euo pipefail
INPUT="${1:-voip_codec/assets/sample_speech.flac}"
CODEC="${2:-codec2-700c}"
VC="${VOIP_CODEC:-voip-codec}"
export VOIP_CODEC_SIGNALING_SECRET="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
PORT="${PORT:-8765}"
# the recording goes to a new temporary folder unless OUTPUT names a file
OUTPUT="${OUTPUT:-$(mktemp -d "${TMPDIR:-/tmp}/voip-codec-call-XXXXXX")/received.wav}"

"$VC" serve --host 127.0.0.1 --port "$PORT" & SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
sleep 1
URL="ws://127.0.0.1:$PORT/ws"
"$VC" call --room demo --peer listener --server "$URL" --loopback --codec "$CODEC" \
    --output "$OUTPUT" --duration 15 --json & LISTENER=$!
sleep 1
"$VC" call --room demo --peer talker --server "$URL" --loopback --codec "$CODEC" \
    --input "$INPUT" --json
wait $LISTENER
echo "received audio: $OUTPUT"
