# syntax=docker/dockerfile:1
# Build: docker build -t ferry:0.1.0 .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY migrations migrations
COPY src src
RUN cargo build --release --locked && strip target/release/ferry

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates procps \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 65532 --user-group --no-create-home --shell /usr/sbin/nologin ferry
COPY --from=build /src/target/release/ferry /usr/local/bin/ferry
# The config folder (schedules.toml, jobs/) is mounted here, read-only.
ENV FERRY_CONFIG=/etc/ferry \
    FERRY_LOG_FORMAT=json
USER 65532:65532
WORKDIR /tmp
EXPOSE 9464
# `ferry` is the entrypoint, so `kubectl exec … -- ferry trigger JOB` and
# `kubectl exec … -- kill -USR1 1` (procps) both work.
ENTRYPOINT ["/usr/local/bin/ferry"]
CMD ["run"]
