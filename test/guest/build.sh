#!/bin/sh
# build.sh: assemble guest.S into the flat binary guest.bin.
#
# Usage: ./build.sh [OUTDIR]   (default: the directory of this script)
#
# Needs GNU as, ld and objcopy (binutils). The output depends only on
# guest.S and the binutils version: no build IDs, timestamps or paths end up
# in the flat binary. The text section is linked at the guest load address
# 0x100000 so RIP-relative references resolve for that address.
set -eu

src_dir=$(cd "$(dirname "$0")" && pwd)
out_dir=${1:-$src_dir}
mkdir -p "$out_dir"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

as --64 -o "$tmp/guest.o" "$src_dir/guest.S"
ld -m elf_x86_64 -nostdlib --build-id=none -e _start -Ttext=0x100000 \
	-o "$tmp/guest.elf" "$tmp/guest.o"
objcopy -O binary -j .text "$tmp/guest.elf" "$tmp/guest.bin"
chmod 644 "$tmp/guest.bin"
mv "$tmp/guest.bin" "$out_dir/guest.bin"
