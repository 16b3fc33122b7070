// Package harness holds the testable parts of the nested-host harness
// (go run ./test/nested): a newc cpio writer for initramfs images, the
// kernel module lists and their dependency order, the /init scripts of the
// nested host and of the small Linux guest, the console marker protocol, a
// client of QEMU's human monitor (for diagnostics of a wedged nested host)
// and parsers for the output of apt-cache and ldd.
//
// The nested host is a Debian kernel booted under qemu-system-x86_64 -cpu max
// without ERMS and FSRM (TCG; see test/nested's defaultCPU), which offers a
// real /dev/kvm (kvm_amd on emulated SVM); see /work/shared/NESTED-KVM.md in
// the project notes.
package harness
