#!/bin/sh
# Rebuilds the boot sectors of the integration tests from their sources
# with GNU binutils (as, ld): pmode.bin from pmode.S, hammer.bin from
# hammer.S (both include pm32.inc). With an argument DIR, writes them
# there instead (TestBootSectorsReproducible compares them with the
# committed ones).
set -eu
cd "$(dirname "$0")"
out=${1:-.}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for name in pmode hammer; do
	as --32 -o "$tmp/$name.o" "$name.S"
	ld -m elf_i386 -Ttext=0x7c00 --oformat binary -o "$out/$name.bin" "$tmp/$name.o"
done
