# beanstalkd from Debian, as the tests and `amosync dev` run it.
# BASE_IMAGE: any Debian image with apt sources (compose passes AMOSYNC_BEANSTALKD_BASE_IMAGE).
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends beanstalkd netcat-openbsd \
    && rm -rf /var/lib/apt/lists/* && mkdir -p /var/lib/beanstalkd
EXPOSE 11300
