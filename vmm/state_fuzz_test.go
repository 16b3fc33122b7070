package vmm

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"reflect"
	"testing"

	"godwit/migrate"
	"godwit/vmm/kvm"
)

// testVCPUState returns a vCPU state with a few CPUID entries and MSRs
// and recognisable registers.
func testVCPUState(entries, msrs int) *vcpuState {
	st := &vcpuState{}
	for i := range entries {
		st.cpuid.Entries = append(st.cpuid.Entries, kvm.CPUIDEntry2{Function: uint32(i), EAX: 0x1000 + uint32(i)})
	}
	for i := range msrs {
		st.msrs = append(st.msrs, kvm.MSREntry{Index: 0x10 + uint32(i), Data: uint64(i) << 32})
	}
	st.mp.State = kvm.MPStateRunnable
	st.regs.RIP, st.regs.RFLAGS = 0x7c00, 2
	st.xcrs.NrXCRs = 1
	return st
}

// FuzzVCPUState decodes arbitrary bytes as a vCPU section. It must not
// panic; what it accepts has at most maxCPUIDEntries CPUID entries and
// maxMSRs MSRs (and no more than the bytes can hold), a known MP state and
// at most kvm.MaxXCRs XCRs, and re-encodes to as many bytes, which decode
// to the same state (padding in the kernel structures reads as zero).
func FuzzVCPUState(f *testing.F) {
	for _, st := range []*vcpuState{testVCPUState(0, 0), testVCPUState(3, 2), testVCPUState(1, 40)} {
		b := st.encode()
		f.Add(b)
		f.Add(b[:len(b)-1])
		f.Add(append(b[:len(b):len(b)], 0))
	}
	huge := testVCPUState(0, 0).encode()
	copy(huge, []byte{0xff, 0xff, 0xff, 0xff}) // CPUID count
	f.Add(huge)
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := decodeVCPUState(migrate.Section{ID: "vcpu/0", Version: vcpuStateVersion, Data: data})
		if err != nil {
			if st != nil {
				t.Fatal("a refused section returned state")
			}
			return
		}
		if len(st.cpuid.Entries) > maxCPUIDEntries || len(st.msrs) > maxMSRs ||
			len(st.cpuid.Entries)*binary.Size(kvm.CPUIDEntry2{})+len(st.msrs)*binary.Size(kvm.MSREntry{}) > len(data) {
			t.Fatalf("%d CPUID entries and %d MSRs from %d bytes", len(st.cpuid.Entries), len(st.msrs), len(data))
		}
		if st.mp.State > kvm.MPStateSIPIReceived || st.xcrs.NrXCRs > kvm.MaxXCRs {
			t.Fatalf("accepted MP state %d, %d XCRs", st.mp.State, st.xcrs.NrXCRs)
		}
		// The kernel structures' padding (blank fields of the mirrors)
		// is ignored on decode and written as zeros: an accepted
		// section re-encodes to as many bytes, which decode to the same
		// state.
		again := st.encode()
		if len(again) != len(data) {
			t.Fatalf("an accepted section of %d bytes re-encodes to %d", len(data), len(again))
		}
		back, err := decodeVCPUState(migrate.Section{ID: "vcpu/0", Version: vcpuStateVersion, Data: again})
		if err != nil || !reflect.DeepEqual(back, st) {
			t.Fatalf("re-encoded section decodes differently: %v", err)
		}
	})
}

// FuzzVMState decodes arbitrary bytes as the irqchip, PIT and clock
// sections. It must not panic; what it accepts has the chips in order and
// re-encodes to the same bytes.
func FuzzVMState(f *testing.F) {
	var st vmState
	for i := range st.chips {
		st.chips[i].ChipID = uint32(i)
	}
	st.clock.Clock = 123456789
	good := st.encode()
	f.Add(good[0].Data, good[1].Data, good[2].Data)
	f.Add(good[0].Data[:10], good[1].Data, good[2].Data)
	f.Add(good[0].Data, good[1].Data, append(good[2].Data[:len(good[2].Data):len(good[2].Data)], 1))
	swapped := append([]byte(nil), good[0].Data...)
	swapped[0] = 1
	f.Add(swapped, good[1].Data, good[2].Data)
	f.Fuzz(func(t *testing.T, chips, pit, clock []byte) {
		byID := map[string]migrate.Section{
			sectionIRQChip: {ID: sectionIRQChip, Version: irqchipVersion, Data: chips},
			sectionPIT:     {ID: sectionPIT, Version: pitVersion, Data: pit},
			sectionClock:   {ID: sectionClock, Version: clockVersion, Data: clock},
		}
		st, err := decodeVMState(byID)
		if err != nil {
			return
		}
		for i, c := range st.chips {
			if c.ChipID != uint32(i) {
				t.Fatalf("irqchip %d has chip id %d", i, c.ChipID)
			}
		}
		again := st.encode()
		for i, want := range [][]byte{chips, pit, clock} {
			if !bytes.Equal(again[i].Data, want) {
				t.Fatalf("section %s does not re-encode to its bytes", again[i].ID)
			}
		}
	})
}

// FuzzMigrationConfig parses arbitrary bytes as the VM configuration of a
// migration handshake. It must not panic; what it accepts is within this
// godwit's limits and survives a JSON round trip unchanged.
func FuzzMigrationConfig(f *testing.F) {
	for _, s := range []string{
		`{"memory_bytes":67108864,"cpus":1,"guest":"linux","cpuid":[]}`,
		`{"memory_bytes":67108864,"cpus":2,"guest":"linux","cpuid":[{"function":1,"index":0,"ebx":0,"ecx":1,"edx":2}],"devices":["virtio-rng","virtio-blk","virtio-net"],` +
			`"disks":[{"path":"/a.img","sectors":2048,"readonly":true}],"nets":[{"tap":"tap0","mac":"52:54:00:12:34:56"}]}`,
		`{"memory_bytes":4294967296,"cpus":1,"guest":"boot-sector","cpuid":[],"devices":["virtio-rng"]}`,
		`{"memory_bytes":1,"cpus":0}`,
		`{"memory_bytes":67108864,"cpus":1,"guest":"linux","cpuid":[],"devices":["virtio-blk"],"disks":[{"path":"","sectors":1}]}`,
		`{"memory_bytes":67108864,"cpus":1,"unknown":1}`,
		`[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		mc, err := ParseMigrationConfig(data)
		if err != nil {
			return
		}
		if mc.CPUs < 1 || mc.CPUs > MaxCPUs || len(mc.Disks) > MaxDisks || len(mc.Nets) > MaxNets || len(mc.CPUID) > len(featureLeaves) {
			t.Fatalf("accepted a configuration beyond the limits: %d vCPUs, %d disks, %d nets, %d CPUID leaves",
				mc.CPUs, len(mc.Disks), len(mc.Nets), len(mc.CPUID))
		}
		again, err := json.Marshal(mc)
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseMigrationConfig(again)
		if err != nil {
			t.Fatalf("re-encoded configuration refused: %v\n%s", err, again)
		}
		// Compared as JSON: an empty list and none are the same
		// configuration.
		if twice, _ := json.Marshal(back); !bytes.Equal(twice, again) || back.MemoryBytes != mc.MemoryBytes || back.CPUs != mc.CPUs {
			t.Fatalf("round trip changed the configuration:\n%s\n%s", again, twice)
		}
	})
}
