// Package integration holds the end-to-end tests of godwit: they start real
// VMs through /dev/kvm (and the godwit binary named by GODWIT_BIN, guest
// kernel GODWIT_KERNEL, guest initramfs GODWIT_INITRD) and skip cleanly where
// /dev/kvm is not usable. `make test` runs them directly when /dev/kvm works
// and otherwise inside the nested host (go run ./test/nested).
package integration
