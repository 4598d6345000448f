# syntax=docker/dockerfile:1
# A static coral-nfd on an empty image: nothing in it but the binary.
#
#   docker build -t registry.example.com/coral-nfd:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t ... --push .
#
# Each platform builds natively (under QEMU emulation for a foreign one), so the same
# steps serve amd64 and arm64 (Raspberry Pi 5, Coral Dev Board).
FROM docker.io/library/rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY src ./src
# The bench targets are declared in Cargo.toml, so their files must exist to build.
COPY benches ./benches
# glibc, statically linked: no loader, no libc in the final image.
RUN target="$(uname -m)-unknown-linux-gnu" \
 && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target "$target" \
 && cp "target/$target/release/coral-nfd" /coral-nfd \
 && /coral-nfd --version

FROM scratch
COPY --from=build /coral-nfd /coral-nfd
# root, for the root-owned host features.d directory; the DaemonSet drops every
# capability and mounts the root filesystem read-only.
USER 0:0
ENTRYPOINT ["/coral-nfd"]
