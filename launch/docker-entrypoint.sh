#!/usr/bin/env bash
# Start a Ray head on loopback (dashboard and job API on 127.0.0.1 only), then run the given command.
# Token authentication is on for the cluster and its clients alike (RAY_AUTH_MODE=token).
set -euo pipefail
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
# Worker lines once in the job log (Ray Train's print patch would log each twice).
export RAY_TRAIN_ENABLE_PRINT_PATCH="${RAY_TRAIN_ENABLE_PRINT_PATCH:-0}"
# A fresh container has no token yet: make one (saved to ~/.ray/auth_token, never printed) unless one
# is given (RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH, e.g. to share it with other nodes).
if [ "$RAY_AUTH_MODE" = "token" ] && [ -z "${RAY_AUTH_TOKEN:-}" ] && [ -z "${RAY_AUTH_TOKEN_PATH:-}" ]; then
    ray get-auth-token --generate > /dev/null
fi
ray start --head --node-ip-address=127.0.0.1 --dashboard-host=127.0.0.1 --dashboard-port=8265 \
    --port=6379 --disable-usage-stats
# `ray job submit` finds the job API at http://127.0.0.1:8265; drivers find the cluster by itself.
exec "$@"
