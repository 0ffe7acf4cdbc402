#!/usr/bin/env bash
# Entry point of the srgnn image (every service of docker-compose.yml except postgres).
#
# Airflow's simple auth manager reads its users' passwords from a JSON file and, when a user
# is missing there, generates a password and prints it to the log. When AIRFLOW_ADMIN_PASSWORD
# is set, write the file first so that the login is the one chosen in .env.
set -euo pipefail

if [ -n "${AIRFLOW_ADMIN_PASSWORD:-}" ] && [ -n "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-}" ]; then
  python3 - <<'PY'
import json
import os

path = os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
users = os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin")
username = users.split(",")[0].split(":")[0].strip()
os.makedirs(os.path.dirname(path), exist_ok=True)
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as f:
    json.dump({username: os.environ["AIRFLOW_ADMIN_PASSWORD"]}, f)
PY
fi

exec "$@"
