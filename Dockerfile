# ewssync: the official Airflow image plus the pinned requirements and the `ewssync` package.
# Extending (not customising) the image, as https://airflow.apache.org/docs/docker-stack/build.html
# recommends: stay on the `airflow` user, pin apache-airflow==${AIRFLOW_VERSION} next to the extra
# packages so pip can never up- or downgrade Airflow itself.
#
# The base tag must match the apache-airflow pin in requirements.txt (tests/unit/test_compose.py
# checks it); when bumping Airflow, change both.
FROM apache/airflow:3.3.2-python3.11

# Files are owned by `airflow` (group 0, as the image expects) so setuptools can build in place.
COPY --chown=airflow:0 requirements.txt pyproject.toml /opt/ewssync/
COPY --chown=airflow:0 plugins/ /opt/ewssync/plugins/

# 1. the pinned third-party requirements (Airflow pinned to the image's own version: the
#    official recommendation; a mismatch with requirements.txt makes pip fail the build here),
# 2. the ewssync package itself, without dependencies (they are all in requirements.txt); this
#    registers the `ews` connection type through the provider entry point.
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /opt/ewssync/requirements.txt \
 && pip install --no-cache-dir --no-deps /opt/ewssync \
 && rm -rf /opt/ewssync/plugins/*.egg-info /opt/ewssync/build

# The image also works without bind mounts (docker-compose.yaml mounts ./dags, ./plugins,
# ./include over these for development): DAG file and SQL migrations/queries baked in.
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 include/ /opt/airflow/include/
ENV EWSSYNC_SQL_DIR=/opt/airflow/include/sql
