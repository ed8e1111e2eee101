# The hub's Airflow image: Airflow 3.3.2 with the hub installed (its stage packages, the `hub` command, the
# contracts, the policy) and its DAGs in /opt/airflow/dags. Every service of docker-compose.yml runs it.
# The python3.11 variant of the 3.3.2 image, because the hub supports Python 3.11 (pyproject.toml).
FROM apache/airflow:3.3.2-python3.11

ENV HUB_HOME=/opt/airflow/hub \
    HUB_SIM_DATA=/opt/airflow/sim \
    GX_ANALYTICS_ENABLED=false \
    AIRFLOW__CORE__LOAD_EXAMPLES=false

# the source first, the DAGs last: a DAG change rebuilds only the last layer
COPY --chown=airflow:0 pyproject.toml README.md /opt/hub/src/
COPY --chown=airflow:0 hub /opt/hub/src/hub
COPY --chown=airflow:0 connectors /opt/hub/src/connectors
COPY --chown=airflow:0 schemas /opt/hub/src/schemas
COPY --chown=airflow:0 privacy /opt/hub/src/privacy
COPY --chown=airflow:0 linkage /opt/hub/src/linkage
COPY --chown=airflow:0 publish /opt/hub/src/publish
COPY --chown=airflow:0 simulators /opt/hub/src/simulators
COPY --chown=airflow:0 service /opt/hub/src/service

# Airflow stays at the image's version; the hub's own pins (pyproject.toml) resolve around it.
# The hub's home and the simulators' folder exist owned by airflow, so the named volumes mounted there are
# writable by the containers' user (50000).
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" /opt/hub/src \
    && hub privacy check \
    && mkdir -p /opt/airflow/hub /opt/airflow/sim \
    && chmod 0700 /opt/airflow/hub

COPY --chown=airflow:0 dags /opt/airflow/dags
