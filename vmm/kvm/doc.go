// Package kvm is a typed wrapper around the Linux KVM API (/dev/kvm): the system,
// VM and vCPU ioctls godwit needs to run guests and to save and restore their
// complete state for live migration. Structs that mirror kernel ABI structs say
// which struct they mirror; pointer-taking ioctls live in *_unsafe.go files.
package kvm
