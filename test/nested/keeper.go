package main

import (
	"fmt"
	"os"
	"time"

	"godwit/vmm/kvm"
)

// keepKVM runs inside the nested host (`--keep-kvm`, started by its /init
// before the payload): it creates a KVM VM with an in-kernel irqchip and
// one vCPU and holds them until the host powers off, so that the tests'
// VMs never take KVM from "no VM" to "one VM" and back.
//
// Those transitions patch kernel code while every CPU may be running it:
// KVM's first VM enables preempt notifiers (the static branch in
// finish_task_switch, on every context switch) and SVM on every CPU, its
// last VM disables both, and a vCPU's LAPIC moves two deferred static
// keys (apic_hw_disabled, apic_sw_disabled). Under QEMU's TCG the nested
// host hung while patching code this way: CI's wedge diagnostics caught a
// CPU looping through asm_exc_int3 on finish_task_switch's static branch
// (text_poke_bp's breakpoint), and others spinning in the kernel with
// interrupts off. With a VM held for the whole run, none of those keys
// ever changes after the first test. The held vCPU never runs; its LAPIC
// stays disabled, which keeps both APIC keys counted.
//
// Until 2026-11-28 (session 7) the keeper died the moment it started
// (Go's deadlock detector, see below), so the CI runs that "still wedged
// with it" never had it. Alive, it did not end them either: the fourth
// integration run with it wedged twice (see docs/testing.md). It stays
// because those VM transitions patch hot code for nothing. /init warns
// when the keeper is gone at the end of a run.
func keepKVM() int {
	sys, err := kvm.Open()
	if err == nil {
		var vm *kvm.VM
		if vm, err = sys.CreateVM(); err == nil {
			if err = vm.CreateIRQChip(); err == nil {
				_, err = vm.CreateVCPU(0)
			}
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "godwit-nested: warning: cannot hold a KVM VM (%v): tests create KVM's first VM themselves\n", err)
		return 1
	}
	fmt.Fprintln(os.Stderr, "godwit-nested: holding a KVM VM for the whole run (see keepKVM)")
	// Until the host powers off. Not `select {}`: with no other
	// goroutine, Go's runtime calls that a deadlock and kills the
	// process at once (which is what every run before this fix did, so
	// the keeper never held its VM); a pending timer is not a deadlock.
	for {
		time.Sleep(time.Hour)
	}
}
