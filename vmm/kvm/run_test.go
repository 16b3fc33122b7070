package kvm

import (
	"bytes"
	"encoding/binary"
	"slices"
	"strings"
	"testing"
)

// testPageSize is the size of the synthetic kvm_run mappings: the usual
// KVM_GET_VCPU_MMAP_SIZE of one kvm_run page plus the PIO data page.
const testPageSize = 2 * 4096

// ioPage builds a synthetic kvm_run page holding a KVM_EXIT_IO exit.
func ioPage(dir, size uint8, port uint16, count uint32, dataOff uint64) runPage {
	p := make(runPage, testPageSize)
	binary.NativeEndian.PutUint32(p[runExitReason:], uint32(ExitIO))
	p[runIODirection] = dir
	p[runIOSize] = size
	binary.NativeEndian.PutUint16(p[runIOPort:], port)
	binary.NativeEndian.PutUint32(p[runIOCount:], count)
	binary.NativeEndian.PutUint64(p[runIODataOffset:], dataOff)
	return p
}

// TestDecodeIO decodes synthetic KVM_EXIT_IO pages, rejecting data windows outside the mapping.
func TestDecodeIO(t *testing.T) {
	tests := []struct {
		name    string
		page    runPage
		want    IOExit // Data compared by length and offset only
		wantOff int
		wantErr string
	}{
		{"out byte", ioPage(exitIOOut, 1, 0x3f8, 1, 4096), IOExit{Size: 1, Port: 0x3f8, Count: 1}, 4096, ""},
		{"in dword", ioPage(exitIOIn, 4, 0xcfc, 1, 4096), IOExit{In: true, Size: 4, Port: 0xcfc, Count: 1}, 4096, ""},
		{"rep outsw", ioPage(exitIOOut, 2, 0x1f0, 256, 4096), IOExit{Size: 2, Port: 0x1f0, Count: 256}, 4096, ""},
		{"fills to the end", ioPage(exitIOOut, 4, 0x10, 1024, 4096), IOExit{Size: 4, Port: 0x10, Count: 1024}, 4096, ""},
		{"one byte past the end", ioPage(exitIOOut, 1, 0x10, 1, testPageSize), IOExit{}, 0, "outside"},
		{"runs past the end", ioPage(exitIOOut, 4, 0x10, 1025, 4096), IOExit{}, 0, "outside"},
		{"offset far out", ioPage(exitIOOut, 1, 0x10, 1, 1<<62), IOExit{}, 0, "outside"},
		{"offset wraps", ioPage(exitIOOut, 4, 0x10, 4, ^uint64(0)-3), IOExit{}, 0, "outside"},
		{"offset inside kvm_run", ioPage(exitIOOut, 1, 0x10, 1, 16), IOExit{}, 0, "outside"},
		{"huge count", ioPage(exitIOIn, 4, 0x10, ^uint32(0), 4096), IOExit{}, 0, "outside"},
		{"bad size 3", ioPage(exitIOOut, 3, 0x10, 1, 4096), IOExit{}, 0, "access size"},
		{"bad size 0", ioPage(exitIOOut, 0, 0x10, 1, 4096), IOExit{}, 0, "access size"},
		{"zero count", ioPage(exitIOOut, 1, 0x10, 0, 4096), IOExit{}, 0, "count"},
		{"bad direction", ioPage(7, 1, 0x10, 1, 4096), IOExit{}, 0, "direction"},
		{"short mapping", ioPage(exitIOOut, 1, 0x10, 1, 4096)[:100], IOExit{}, 0, "mapping"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.page.decodeIO()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("decodeIO() error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("decodeIO() error = %v", err)
			}
			if got.In != tt.want.In || got.Size != tt.want.Size || got.Port != tt.want.Port || got.Count != tt.want.Count {
				t.Errorf("decodeIO() = %+v, want %+v", got, tt.want)
			}
			if n := int(tt.want.Size) * int(tt.want.Count); len(got.Data) != n || cap(got.Data) != n {
				t.Errorf("len/cap(Data) = %d/%d, want %d", len(got.Data), cap(got.Data), n)
			}
			// Data must alias the page at the data offset.
			got.Data[0] = 0xA5
			if tt.page[tt.wantOff] != 0xA5 {
				t.Errorf("Data does not alias the kvm_run page at offset %d", tt.wantOff)
			}
		})
	}
}

// mmioPage builds a synthetic kvm_run page holding a KVM_EXIT_MMIO exit.
func mmioPage(addr uint64, data []byte, n uint32, write bool) runPage {
	p := make(runPage, testPageSize)
	binary.NativeEndian.PutUint32(p[runExitReason:], uint32(ExitMMIO))
	binary.NativeEndian.PutUint64(p[runMMIOPhysAddr:], addr)
	copy(p[runMMIOData:runMMIOData+8], data)
	binary.NativeEndian.PutUint32(p[runMMIOLen:], n)
	if write {
		p[runMMIOIsWrite] = 1
	}
	return p
}

// TestDecodeMMIO decodes synthetic KVM_EXIT_MMIO pages, rejecting lengths outside 1..8.
func TestDecodeMMIO(t *testing.T) {
	tests := []struct {
		name     string
		page     runPage
		wantAddr uint64
		wantData []byte
		wantW    bool
		wantErr  bool
	}{
		{"write dword", mmioPage(0xd0000000, []byte{1, 2, 3, 4, 5, 6, 7, 8}, 4, true), 0xd0000000, []byte{1, 2, 3, 4}, true, false},
		{"read qword", mmioPage(0xfee00030, []byte{9, 8, 7, 6, 5, 4, 3, 2}, 8, false), 0xfee00030, []byte{9, 8, 7, 6, 5, 4, 3, 2}, false, false},
		{"write byte", mmioPage(0x1000, []byte{0xff}, 1, true), 0x1000, []byte{0xff}, true, false},
		{"len 9 rejected", mmioPage(0x1000, nil, 9, false), 0, nil, false, true},
		{"len huge rejected", mmioPage(0x1000, nil, ^uint32(0), true), 0, nil, false, true},
		{"len 0 rejected", mmioPage(0x1000, nil, 0, false), 0, nil, false, true},
		{"short mapping", mmioPage(0x1000, nil, 4, false)[:64], 0, nil, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.page.decodeMMIO()
			if tt.wantErr {
				if err == nil {
					t.Fatalf("decodeMMIO() = %+v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("decodeMMIO() error = %v", err)
			}
			if got.Addr != tt.wantAddr || got.IsWrite != tt.wantW || !bytes.Equal(got.Data, tt.wantData) {
				t.Errorf("decodeMMIO() = %+v, want addr %#x data %v write %v", got, tt.wantAddr, tt.wantData, tt.wantW)
			}
			if cap(got.Data) != len(tt.wantData) {
				t.Errorf("cap(Data) = %d, want %d (no access beyond the length)", cap(got.Data), len(tt.wantData))
			}
			got.Data[0] = 0x5A
			if tt.page[runMMIOData] != 0x5A {
				t.Error("Data does not alias kvm_run.mmio.data")
			}
		})
	}
}

// putU64s writes vals as __u64 at off.
func putU64s(p runPage, off int, vals []uint64) {
	for i, v := range vals {
		binary.NativeEndian.PutUint64(p[off+8*i:], v)
	}
}

// TestVCPUExitAccessors checks the remaining kvm_run accessors on synthetic pages.
func TestVCPUExitAccessors(t *testing.T) {
	seq := func(n int) []uint64 {
		s := make([]uint64, n)
		for i := range s {
			s[i] = uint64(100 + i)
		}
		return s
	}
	tests := []struct {
		name  string
		setup func(p runPage)
		check func(t *testing.T, c *VCPU)
	}{
		{
			name: "system event reset with data",
			setup: func(p runPage) {
				binary.NativeEndian.PutUint32(p[runExitReason:], uint32(ExitSystemEvent))
				binary.NativeEndian.PutUint32(p[runSystemEventType:], SystemEventReset)
				binary.NativeEndian.PutUint32(p[runSystemEventNData:], 2)
				putU64s(p, runSystemEventData, []uint64{7, 9})
			},
			check: func(t *testing.T, c *VCPU) {
				if c.ExitReason() != ExitSystemEvent {
					t.Errorf("ExitReason() = %v", c.ExitReason())
				}
				typ, data := c.SystemEvent()
				if typ != SystemEventReset || !slices.Equal(data, []uint64{7, 9}) {
					t.Errorf("SystemEvent() = %d, %v; want %d, [7 9]", typ, data, SystemEventReset)
				}
			},
		},
		{
			name: "system event ndata clamped to 16",
			setup: func(p runPage) {
				binary.NativeEndian.PutUint32(p[runSystemEventType:], SystemEventCrash)
				binary.NativeEndian.PutUint32(p[runSystemEventNData:], 1000)
				putU64s(p, runSystemEventData, seq(16))
			},
			check: func(t *testing.T, c *VCPU) {
				typ, data := c.SystemEvent()
				if typ != SystemEventCrash || !slices.Equal(data, seq(16)) {
					t.Errorf("SystemEvent() = %d, %v; want %d and 16 words", typ, data, SystemEventCrash)
				}
			},
		},
		{
			name: "internal error",
			setup: func(p runPage) {
				binary.NativeEndian.PutUint32(p[runExitReason:], uint32(ExitInternalError))
				binary.NativeEndian.PutUint32(p[runInternalSuberror:], InternalErrorEmulation)
				binary.NativeEndian.PutUint32(p[runInternalNData:], 3)
				putU64s(p, runInternalData, []uint64{1, 2, 3, 4})
			},
			check: func(t *testing.T, c *VCPU) {
				sub, data := c.InternalError()
				if sub != InternalErrorEmulation || !slices.Equal(data, []uint64{1, 2, 3}) {
					t.Errorf("InternalError() = %d, %v", sub, data)
				}
			},
		},
		{
			name: "fail entry",
			setup: func(p runPage) {
				binary.NativeEndian.PutUint32(p[runExitReason:], uint32(ExitFailEntry))
				binary.NativeEndian.PutUint64(p[runFailEntryReason:], 0x80000021)
				binary.NativeEndian.PutUint32(p[runFailEntryCPU:], 5)
			},
			check: func(t *testing.T, c *VCPU) {
				if r, cpu := c.FailEntry(); r != 0x80000021 || cpu != 5 {
					t.Errorf("FailEntry() = %#x, %d", r, cpu)
				}
			},
		},
		{
			name: "exception and unknown",
			setup: func(p runPage) {
				binary.NativeEndian.PutUint32(p[runExException:], 13)
				binary.NativeEndian.PutUint32(p[runExErrorCode:], 0x18)
			},
			check: func(t *testing.T, c *VCPU) {
				if v, code := c.Exception(); v != 13 || code != 0x18 {
					t.Errorf("Exception() = %d, %#x", v, code)
				}
				if got := c.HardwareExitReason(); got != 0x18<<32|13 {
					t.Errorf("HardwareExitReason() = %#x", got)
				}
			},
		},
		{
			name:  "immediate exit and interrupt window flags",
			setup: func(p runPage) { p[runReadyForInjection] = 1 },
			check: func(t *testing.T, c *VCPU) {
				c.SetImmediateExit(true)
				c.SetRequestInterruptWindow(true)
				if c.run[runImmediateExit] != 1 || c.run[runRequestInterruptWindow] != 1 {
					t.Error("set flags not stored in kvm_run")
				}
				c.SetImmediateExit(false)
				if c.run[runImmediateExit] != 0 || c.run[runRequestInterruptWindow] != 1 {
					t.Error("clearing immediate_exit touched other bytes")
				}
				if !c.ReadyForInterruptInjection() {
					t.Error("ReadyForInterruptInjection() = false")
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := make(runPage, testPageSize)
			tt.setup(p)
			tt.check(t, &VCPU{fd: -1, run: p})
		})
	}
}

// TestClosedVCPUAccessors checks that a VCPU without a mapping (closed)
// neither panics nor reports an exit.
func TestClosedVCPUAccessors(t *testing.T) {
	c := &VCPU{fd: -1}
	c.SetImmediateExit(true)
	c.SetRequestInterruptWindow(true)
	checks := []struct {
		name string
		ok   bool
	}{
		{"ExitReason", c.ExitReason() == ExitUnknown},
		{"IO", func() bool { _, err := c.IO(); return err != nil }()},
		{"MMIO", func() bool { _, err := c.MMIO(); return err != nil }()},
		{"SystemEvent", func() bool { typ, d := c.SystemEvent(); return typ == 0 && len(d) == 0 }()},
		{"Run", func() bool { return c.Run() != nil }()},
		{"Close", func() bool { return c.Close() != nil }()},
	}
	for _, ck := range checks {
		if !ck.ok {
			t.Errorf("%s on a closed VCPU misbehaved", ck.name)
		}
	}
}
