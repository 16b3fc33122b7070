#!/bin/sh
# build.sh: assemble guest.S into the flat binary guest.bin, then boot.S
# (which includes guest.bin) into the bootable disk image boot.bin.
#
# Usage: ./build.sh [OUTDIR]   (default: the directory of this script)
#
# Needs GNU as, ld and objcopy (binutils). The output depends only on
# guest.S, boot.S and the binutils version: no build IDs, timestamps or
# paths end up in the flat binaries. guest.bin's text section is linked at
# the guest load address 0x100000 so RIP-relative references resolve for
# that address (its code is position-independent, which is why boot.bin
# can carry it and copy it there); boot.bin is linked at 0x7c00, where a
# BIOS or `godwit run --boot-sector` loads it.
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

as --64 -I "$tmp" -o "$tmp/boot.o" "$src_dir/boot.S"
ld -m elf_x86_64 -nostdlib --build-id=none -e _start -Ttext=0x7c00 \
	-o "$tmp/boot.elf" "$tmp/boot.o"
objcopy -O binary -j .text "$tmp/boot.elf" "$tmp/boot.bin"

chmod 644 "$tmp/guest.bin" "$tmp/boot.bin"
mv "$tmp/guest.bin" "$out_dir/guest.bin"
mv "$tmp/boot.bin" "$out_dir/boot.bin"
