# syntax=docker/dockerfile:1
# coral-nfd's image: the static binary on an empty image, nothing else in it.
#
# From source, for one platform or several (the default target, the last stage):
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     -t registry.example.com/coral-nfd:0.1.0 --push .
# Each platform builds natively (under QEMU emulation for a foreign one), so the same
# steps serve amd64 and arm64 (Raspberry Pi 5, Coral Dev Board). Stages are built as
# needed (BuildKit, docker's default builder, or podman/buildah): `prebuilt` below is
# not built for this target.
#
# From a static binary built beforehand, offline, with no base image to pull: the
# context is a directory holding only the binary, named coral-nfd:
#   RUSTFLAGS='-C target-feature=+crt-static' \
#     cargo build --release --locked --target x86_64-unknown-linux-gnu
#   mkdir -p target/image && cp target/x86_64-unknown-linux-gnu/release/coral-nfd target/image/
#   podman build --target prebuilt -f Dockerfile -t ghcr.io/coral-nfd/coral-nfd:0.1.0 target/image
# (docs/deployment.md: loading it into k3s or containerd without a registry). The tests
# build the image they run this way, from this file.

FROM scratch AS prebuilt
COPY coral-nfd /coral-nfd
# root, for the root-owned host features.d and kubelet device-plugins directories; the
# DaemonSets drop every capability and mount the root filesystem read-only.
USER 0:0
ENTRYPOINT ["/coral-nfd"]

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

# The same as `prebuilt`, with the binary built above.
FROM scratch
COPY --from=build /coral-nfd /coral-nfd
USER 0:0
ENTRYPOINT ["/coral-nfd"]
