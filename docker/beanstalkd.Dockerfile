# beanstalkd from Debian, as the tests and `amosync dev` run it.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends beanstalkd netcat-openbsd \
    && rm -rf /var/lib/apt/lists/* && mkdir -p /var/lib/beanstalkd
EXPOSE 11300
