# Builds the broker and runs it with its data directory on /data.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin broker

FROM debian:bookworm-slim
COPY --from=build /src/target/release/broker /usr/local/bin/broker
VOLUME ["/data"]
EXPOSE 5672
ENV BROKER_LISTEN=0.0.0.0:5672 BROKER_DATA_DIR=/data
ENTRYPOINT ["/usr/local/bin/broker"]
