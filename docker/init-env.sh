#!/usr/bin/env bash
# Write .env for docker-compose.yml: a copy of .env.example whose empty secrets are replaced
# by fresh random values (Python's `secrets` module; no other tools needed).
#
#   docker/init-env.sh           refuses to overwrite an existing .env
#   docker/init-env.sh --force   replaces it (new secrets: an existing postgres volume keeps
#                                the old database passwords, so remove it too)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -e .env ] && [ "${1:-}" != "--force" ]; then
  echo "init-env: .env exists; pass --force to replace it" >&2
  exit 1
fi

python3 - .env.example .env <<'PY'
import base64
import os
import secrets
import sys

source, target = sys.argv[1], sys.argv[2]
generators = {
    "AIRFLOW_FERNET_KEY": lambda: base64.urlsafe_b64encode(os.urandom(32)).decode(),
    "AIRFLOW_API_SECRET_KEY": lambda: secrets.token_urlsafe(32),
    "AIRFLOW_JWT_SECRET": lambda: secrets.token_urlsafe(32),
}
lines = []
with open(source) as f:
    for line in f:
        name, sep, value = line.rstrip("\n").partition("=")
        if sep and not line.startswith("#") and value == "" and (
            name.endswith("_PASSWORD") or name in generators
        ):
            # Hex passwords: safe inside connection URLs without escaping.
            line = f"{name}={generators.get(name, lambda: secrets.token_hex(16))()}\n"
        lines.append(line if line.endswith("\n") else line + "\n")
fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as f:
    f.writelines(lines)
PY
echo "init-env: wrote .env (mode 600); the Airflow login is in AIRFLOW_ADMIN_USER / AIRFLOW_ADMIN_PASSWORD" >&2
