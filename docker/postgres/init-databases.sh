#!/usr/bin/env bash
# First start of the postgres service only (an empty data volume): one login role and one
# database per consumer, each owning its database, so that Airflow's metadata, MLflow's
# tracking store and the recommendations warehouse never share tables or credentials.
#
# The passwords come from the service's environment (see .env.example). psql variables
# (:"name", :'password') quote them, so no value is ever pasted into SQL text.
set -euo pipefail

create_database() {
  local name=$1 password=$2
  if [ -z "$password" ]; then
    echo "init-databases: no password given for role '$name'" >&2
    exit 1
  fi
  psql --no-psqlrc --quiet -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
       -v name="$name" -v password="$password" <<'SQL'
CREATE ROLE :"name" LOGIN PASSWORD :'password';
CREATE DATABASE :"name" OWNER :"name";
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
SQL
  echo "init-databases: created role and database '$name'"
}

create_database airflow "${AIRFLOW_DB_PASSWORD:-}"
create_database mlflow "${MLFLOW_DB_PASSWORD:-}"
create_database warehouse "${WAREHOUSE_DB_PASSWORD:-}"
