# syntax=docker/dockerfile:1
# pimbridge: a small, non-root runtime image. Build: docker build -t pimbridge .
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so that source edits rebuild only the workspace's crates. Every member's
# manifest is needed to resolve the workspace; each target it declares gets a stub.
COPY Cargo.toml Cargo.lock build.rs ./
COPY crates/aws-scim-emulator/Cargo.toml crates/aws-scim-emulator/
COPY crates/graph-emulator/Cargo.toml crates/graph-emulator/
COPY crates/testkit/Cargo.toml crates/testkit/
RUN mkdir -p src benches crates/aws-scim-emulator/src crates/graph-emulator/src crates/testkit/src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && echo 'fn main() {}' > benches/fast_path.rs \
 && echo 'fn main() {}' > benches/sync_cycle.rs \
 && echo 'fn main() {}' > crates/aws-scim-emulator/src/main.rs \
 && touch crates/aws-scim-emulator/src/lib.rs \
 && echo 'fn main() {}' > crates/graph-emulator/src/main.rs \
 && touch crates/graph-emulator/src/lib.rs \
 && touch crates/testkit/src/lib.rs \
 && echo 'fn main() {}' > benches/scrape_flood.rs \
 && echo 'fn main() {}' > benches/intake.rs \
 && echo 'fn main() {}' > benches/backlog.rs \
 && echo 'fn main() {}' > benches/retention.rs \
 && cargo build --release --locked -p pimbridge -p aws-scim-emulator -p graph-emulator --bins \
 && rm -rf src benches crates/*/src
COPY src src
COPY sql sql
COPY benches benches
COPY crates crates
# The revision pimbridge_build_info reports (the build context has no .git):
# docker build --build-arg PIMBRIDGE_REVISION=$(git rev-parse --short HEAD) .
ARG PIMBRIDGE_REVISION=unknown
RUN touch src/main.rs src/lib.rs crates/*/src/*.rs \
 && cargo build --release --locked -p pimbridge -p aws-scim-emulator -p graph-emulator --bins

FROM debian:bookworm-slim AS runtime
# ca-certificates is left unpinned on purpose: it should follow the distribution's updates.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin pimbridge
COPY --from=build /src/target/release/pimbridge /usr/local/bin/pimbridge
COPY --from=build /src/target/release/aws-scim-emulator /usr/local/bin/aws-scim-emulator
COPY --from=build /src/target/release/graph-emulator /usr/local/bin/graph-emulator
COPY config/example.toml /etc/pimbridge/example.toml
USER 10001:10001
EXPOSE 8080 9090
ENV PIMBRIDGE_LOG__FORMAT=json
HEALTHCHECK --interval=10s --timeout=3s CMD ["/usr/local/bin/pimbridge", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/pimbridge"]
CMD ["serve"]
