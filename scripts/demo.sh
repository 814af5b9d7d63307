#!/usr/bin/env bash
# Sets up, then runs the service with one demo camera: the overpass clip looped as a live camera
# at its own frame rate, with the calibrated lanes of configs/geometry/overpass_video03.json
# (counts across y=150, per lane, speeds, occupancy, headways). Prints the console's URL and the
# token to paste into it. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
eval "$(scripts/services.sh)"
export ITS__HTTP__BIND=${ITS__HTTP__BIND:-127.0.0.1:8080}
API="http://$ITS__HTTP__BIND"
CLIP=$(realpath ../shared/assets/video/overpass_video03.avi 2>/dev/null || true)
if [ -z "$CLIP" ] || [ ! -f "$CLIP" ]; then
  mkdir -p .local
  CLIP=$PWD/.local/overpass_video03.avi
  [ -f "$CLIP" ] || curl -fsSL -o "$CLIP" \
    https://raw.githubusercontent.com/andrewssobral/bgslibrary/4622bc9cded1c5504cec6db47db07b3e3c782ecc/dataset/overpass_video03.avi
fi

# File cameras only from the clip's folder; a bearer token of the demo's own (made once, kept in
# .local/, which git ignores) for the API. Only its SHA-256 is in the tokens file.
export ITS__CAMERAS__MEDIA_DIR=${ITS__CAMERAS__MEDIA_DIR:-$(dirname "$CLIP")}
export ITS__AUTH__TOKENS_FILE=${ITS__AUTH__TOKENS_FILE:-$PWD/.local/demo-tokens.toml}
mkdir -p .local
if [ ! -s .local/demo-token ] || [ ! -s "$ITS__AUTH__TOKENS_FILE" ]; then
  rm -f .local/demo-token "$ITS__AUTH__TOKENS_FILE"
  (umask 077; ./target/release/its-analytics token --name demo-admin --role admin \
    --append "$ITS__AUTH__TOKENS_FILE" > .local/demo-token)
fi
TOKEN=$(cat .local/demo-token)
AUTH="Authorization: Bearer $TOKEN"

./target/release/its-analytics serve &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT INT TERM
for _ in $(seq 120); do curl -fs "$API/health/ready" >/dev/null && break; sleep 0.5; done
curl -fsS "$API/health/ready" >/dev/null || { echo "service did not become ready" >&2; exit 1; }

curl -sS -o /dev/null -w "register demo camera: HTTP %{http_code} (409 = already registered)\n" \
  -X POST "$API/api/v1/cameras" -H "$AUTH" -H 'content-type: application/json' -d @- <<JSON
{"id": "demo-overpass", "name": "Overpass (demo clip, looped)", "url": "file://$CLIP", "fps": 30,
 "geometry": $(cat configs/geometry/overpass_video03.json),
 "replay": {"loop": true, "realtime": true}}
JSON
cat <<TXT

its-analytics is running on $API with the demo camera "demo-overpass".

Console:  $API/
Token:    $TOKEN
  (paste it on the console's sign-in page; it is kept in .local/demo-token. Open the camera,
   then "Geometry editor" to draw a counting line and save it.)

The API wants the same bearer token:
  export AUTH="Authorization: Bearer \$(cat .local/demo-token)"
  live counts:  curl -s -H "\$AUTH" $API/api/v1/cameras/demo-overpass/counts
  live state:   curl -s -H "\$AUTH" $API/api/v1/cameras/demo-overpass/state
  per minute:   curl -s -H "\$AUTH" '$API/api/v1/cameras/demo-overpass/analytics?interval=1m'
  live events:  curl -N -H "\$AUTH" $API/api/v1/events/stream
  cameras:      curl -s -H "\$AUTH" $API/api/v1/cameras
  system:       curl -s -H "\$AUTH" $API/api/v1/system
  cluster:      curl -s -H "\$AUTH" $API/api/v1/cluster
  API document: curl -s $API/api/v1/openapi.json
  metrics:      curl -s $API/metrics
  events:       redis-cli -u \$ITS__REDIS__URL XREVRANGE its:events + - COUNT 5
Ctrl-C stops the service.
TXT
wait $server
