#!/bin/sh
# Rebuilds pmode.bin from pmode.S with GNU binutils (as, ld).
set -eu
cd "$(dirname "$0")"
out=${1:-pmode.bin}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
as --32 -o "$tmp/pmode.o" pmode.S
ld -m elf_i386 -Ttext=0x7c00 --oformat binary -o "$out" "$tmp/pmode.o"
