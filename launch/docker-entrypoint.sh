#!/usr/bin/env bash
# Start a Ray node, then run the given command.
#
#   docker-entrypoint.sh CMD...                         a head on 127.0.0.1 (one box; the default)
#   docker-entrypoint.sh --head-ip 10.0.0.5 CMD...      a head other boxes can join, on that interface
#   docker-entrypoint.sh --join 10.0.0.5:6379 CMD...    join this box to that head as a worker node
#
# RAY_NODE_IP is the same as --head-ip (and, with --join, the address this node is reached at: an
# overlay or private interface's, e.g. Vast.ai's overlay network or a RunPod Instant Cluster's). The
# dashboard and job API stay on 127.0.0.1 on every node (reach them through an SSH tunnel); the head's
# GCS port is what other nodes join. Token authentication is on for the cluster and its clients alike
# (RAY_AUTH_MODE=token), and a head on anything but loopback refuses to start without it: every node
# and client of a multi-box cluster must be given the same token (RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH).
set -euo pipefail
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
# Worker lines once in the job log (Ray Train's print patch would log each twice).
export RAY_TRAIN_ENABLE_PRINT_PATCH="${RAY_TRAIN_ENABLE_PRINT_PATCH:-0}"
# Keeps a head given 127.0.0.1 on 127.0.0.1: without it Ray swaps that address for the machine's own
# network address (services.resolve_ip_for_localhost). A head other nodes join is on another address.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="${RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER:-0}"

node_ip="${RAY_NODE_IP:-}"
join=""
while [ $# -gt 0 ]; do
    case "$1" in
        --head-ip) node_ip="$2"; shift 2 ;;
        --join) join="$2"; shift 2 ;;
        *) break ;;
    esac
done

is_loopback() { case "$1" in 127.*|localhost|::1) return 0 ;; *) return 1 ;; esac; }

if [ -z "$join" ]; then
    node_ip="${node_ip:-127.0.0.1}"
    if ! is_loopback "$node_ip" && [ "$RAY_AUTH_MODE" != "token" ]; then
        echo "error: a Ray head on $node_ip (not loopback) needs token authentication: unset RAY_AUTH_MODE or set it to token" >&2
        exit 2
    fi
    # A fresh container has no token yet: make one (saved to ~/.ray/auth_token, never printed) unless one
    # is given (RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH, e.g. to share it with other nodes).
    if [ "$RAY_AUTH_MODE" = "token" ] && [ -z "${RAY_AUTH_TOKEN:-}" ] && [ -z "${RAY_AUTH_TOKEN_PATH:-}" ]; then
        ray get-auth-token --generate > /dev/null
    fi
    ray start --head --node-ip-address="$node_ip" --dashboard-host=127.0.0.1 --dashboard-port=8265 \
        --port=6379 --disable-usage-stats
else
    if [ "$RAY_AUTH_MODE" != "token" ] || { [ -z "${RAY_AUTH_TOKEN:-}" ] && [ -z "${RAY_AUTH_TOKEN_PATH:-}" ]; }; then
        echo "error: --join needs the head's token: set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the head's ~/.ray/auth_token" >&2
        exit 2
    fi
    # The loopback setting above makes `ray start --address` refuse to start a joining node at all.
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1 ray start --address="$join" ${node_ip:+--node-ip-address="$node_ip"} \
        --disable-usage-stats
fi
# `ray job submit` finds the job API at http://127.0.0.1:8265 on the head; drivers find the cluster by
# themselves, and take this node's address from RAY_NODE_IP (slm.cluster.connect).
[ -n "$node_ip" ] && export RAY_NODE_IP="$node_ip"
exec "$@"
