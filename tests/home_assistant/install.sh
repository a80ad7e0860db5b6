#!/usr/bin/env bash
# Install a real Home Assistant core for the tests, in its own virtualenv (it pins
# libraries that clash with Nabu's). Cached: a second run with the same version is a no-op.
#   NABU_TEST_HA_DIR  where the venv lives (default ~/.cache/nabu-test-ha)
# homeassistant 2024.3.3 is the newest release for Python 3.11. HA pip-installs its
# integrations' packages at start-up, which cannot work offline or under --skip-pip, so
# the packages of the integrations the test home loads are installed here, at the exact
# versions their manifests name. josepy<2: with josepy 2 every HTTP request answers 500.
set -euo pipefail
HA_VERSION=2024.3.3
DIR="${NABU_TEST_HA_DIR:-$HOME/.cache/nabu-test-ha}"
VENV="$DIR/venv-$HA_VERSION"
STAMP="$VENV/.nabu-installed"
[ -f "$STAMP" ] && exit 0
PY="${NABU_TEST_HA_PYTHON:-$(command -v python3.11 || command -v python3)}"
mkdir -p "$DIR"
rm -rf "$VENV"
"$PY" -m venv "$VENV"
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$VENV/bin/pip" install -q "homeassistant==$HA_VERSION"
# The integrations Home Assistant sets up for the test home (its defaults included).
REQS=$("$VENV/bin/python" - <<'PY'
import json, pathlib
import homeassistant
components = pathlib.Path(homeassistant.__file__).parent / "components"
wanted = ["frontend", "conversation", "image_upload", "recorder", "hardware", "backup",
          "file_upload", "network", "http"]
reqs = []
for name in wanted:
    reqs += json.loads((components / name / "manifest.json").read_text()).get("requirements", [])
print(" ".join(sorted(set(reqs))))
PY
)
"$VENV/bin/pip" install -q $REQS "josepy<2"
touch "$STAMP"
echo "Home Assistant $HA_VERSION installed in $VENV"
