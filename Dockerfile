# One image for every service of docker-compose.yml except PostgreSQL: Airflow (api-server,
# scheduler, dag-processor, triggerer), the MLflow tracking server and the Spark master and
# workers. The Spark driver (in the scheduler), its executors and the Airflow tasks therefore
# run the same Python, the same pinned packages and the same srgnn code.
#
#   docker build -t srgnn-pipeline .
#   docker run --rm srgnn-pipeline srgnn --help

# Debian bookworm: the last Debian release that packages OpenJDK 17 (Spark 4 runs on Java 17).
FROM python:3.11-slim-bookworm

# curl: container healthchecks; procps: `ps`, which Spark's launch scripts call.
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless curl procps \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /opt/srgnn

# Third-party dependencies first, in their own layer: editing the code does not reinstall
# them. The direct dependencies come from pyproject.toml, every version from requirements.lock.
# The PyTorch CPU index supplies torch without the CUDA libraries (several GB).
COPY pyproject.toml requirements.lock ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --extra-index-url https://download.pytorch.org/whl/cpu \
        -c requirements.lock -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The project (the warehouse SQL ships inside the package, srgnn/warehouse/sql/).
COPY README.md ./
COPY srgnn/ srgnn/
RUN pip install -c requirements.lock --no-deps -e .
COPY jobs/ jobs/
COPY dags/ dags/
COPY docker/entrypoint.sh /usr/local/bin/srgnn-entrypoint

# An unprivileged user (uid 50000, group 0 as in Airflow's images) owning the folders that
# docker-compose.yml mounts volumes on; fresh named volumes inherit this ownership.
RUN chmod 0755 /usr/local/bin/srgnn-entrypoint \
    && useradd --create-home --uid 50000 --gid 0 --shell /bin/bash srgnn \
    && mkdir -p /opt/airflow/logs /srgnn /mlflow /data \
    && chown -R 50000:0 /opt/airflow /srgnn /mlflow \
    && chmod -R g+rwX /opt/airflow /srgnn /mlflow
USER 50000

ENV AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/srgnn/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=false \
    SRGNN_HOME=/srgnn \
    PYSPARK_PYTHON=python3

ENTRYPOINT ["srgnn-entrypoint"]
CMD ["srgnn", "--help"]
