# llamashim in a container (untested here: no Docker engine runs on the development machines; linted with hadolint).
#   docker build -t llamashim .
#   docker run --rm -p 127.0.0.1:11434:11434 -e UPSTREAM=http://host.docker.internal:8080 llamashim
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/llamashim
COPY setup.cfg pyproject.toml README.md ./
COPY llamashim ./llamashim
COPY twisted ./twisted
COPY etc/llamashim.yaml /etc/llamashim/llamashim.yaml
RUN pip install . \
    && python -c "from twisted.plugin import getPlugins; from twisted.application.service import IServiceMaker; list(getPlugins(IServiceMaker))" \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin llamashim

USER 10001
EXPOSE 11434
# Inside the container llamashim must listen on all interfaces; publish the port on loopback only (see above)
# unless API keys (auth.api_keys / LLAMASHIM_API_KEYS) are set.
ENTRYPOINT ["twistd", "--nodaemon", "--pidfile=", "--logfile=-", "llamashim"]
CMD ["--listen", "tcp:11434:interface=0.0.0.0"]
