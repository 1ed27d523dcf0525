# One image for every amosync container; FUNCTION picks the functions-framework target.
# BASE_IMAGE: any image with Python 3.11+, pip and useradd (compose passes
# AMOSYNC_PYTHON_BASE_IMAGE; the default is the official Python image).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY shared ./shared
COPY sandbox ./sandbox
COPY scheduler ./scheduler
COPY cli ./cli
COPY devstack ./devstack
COPY testing ./testing
RUN pip install .

COPY functions ./functions
COPY widget ./widget

ARG FUNCTION=""
ENV FUNCTION_TARGET=${FUNCTION} FUNCTION_SOURCE=functions/${FUNCTION}/main.py PORT=8080

# A home directory: gunicorn (27) puts its control socket in $HOME/.gunicorn (without one it logs
# "Control server error: Permission denied: '/home/amosync'" at every start).
RUN useradd --system --uid 10001 --create-home amosync
USER amosync

# The same command `amosync dev` runs for each function (devstack/stack.py: function_command).
CMD ["sh", "-c", "exec functions-framework --source \"$FUNCTION_SOURCE\" --target \"$FUNCTION_TARGET\" --host 0.0.0.0 --port \"$PORT\""]
