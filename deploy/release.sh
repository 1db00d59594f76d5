#!/usr/bin/env bash
# Release binaries of edgegw: static (CGO_ENABLED=0), stripped, reproducible
# paths (-trimpath), the version stamped in. No make needed.
#
#   deploy/release.sh [version] [outdir]
#
# version defaults to `git describe`; outdir to dist/. Produces
# edgegw-<version>-linux-{amd64,arm64,armv7,armv6} and SHA256SUMS.
# armv6 is the Pi Zero / Pi 1; armv7 the Pi 2/3/4 on 32-bit Raspberry Pi OS;
# arm64 the Pi 3/4/5 on 64-bit Raspberry Pi OS.
set -euo pipefail
cd "$(dirname "$0")/.."

version=${1:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
out=${2:-dist}
mkdir -p "$out"

for target in amd64: arm64: arm:7 arm:6; do
	arch=${target%%:*}
	goarm=${target#*:}
	name="edgegw-$version-linux-$arch${goarm:+v$goarm}"
	CGO_ENABLED=0 GOOS=linux GOARCH="$arch" GOARM="$goarm" \
		go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$out/$name" ./cmd/edgegw
	printf '%-40s %6.1f MB\n' "$name" "$(($(stat -c %s "$out/$name") / 1000))e-3"
done
(cd "$out" && sha256sum "edgegw-$version-"* >SHA256SUMS)
