#!/usr/bin/env bash
# Formats the Swift sources with .swift-format and fails if that changed anything.
set -euo pipefail
cd "$(dirname "$0")/.."
before=$(git diff --stat -- Sources Tests bench)
swift format format --in-place --recursive Sources Tests bench
after=$(git diff --stat -- Sources Tests bench)
if [[ "$before" != "$after" ]]; then
    echo "validate.sh: swift format changed files; review and commit them:" >&2
    git diff --stat -- Sources Tests bench >&2
    exit 1
fi
