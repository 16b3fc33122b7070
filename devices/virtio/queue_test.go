package virtio

import (
	"encoding/binary"
	"errors"
	"slices"
	"testing"

	"godwit/vmm/memory"
)

const (
	tRAM    = 4 << 20
	tDesc   = 0x10000
	tAvail  = 0x20000
	tUsed   = 0x30000
	tTable  = 0x40000 // indirect tables
	tBuf    = 0x100000
	tQSize  = 8
	tMaxQSz = 256
)

// testQueue returns an enabled queue of size tQSize over fresh RAM.
func testQueue(t testing.TB, indirect, eventIdx bool) (*Queue, *memory.Memory) {
	t.Helper()
	mem, err := memory.New(tRAM)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	q := newQueue(mem, tMaxQSz)
	q.size, q.ready = tQSize, true
	q.desc, q.driver, q.device = tDesc, tAvail, tUsed
	q.indirect, q.eventIdx = indirect, eventIdx
	if err := q.ringsValid(); err != nil {
		t.Fatal(err)
	}
	return q, mem
}

func putDesc(mem *memory.Memory, table uint64, i uint16, addr uint64, n uint32, flags, next uint16) {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint64(b, addr)
	binary.LittleEndian.PutUint32(b[8:], n)
	binary.LittleEndian.PutUint16(b[12:], flags)
	binary.LittleEndian.PutUint16(b[14:], next)
	copy(mem.RegionHost(0)[table+16*uint64(i):], b)
}

func putU16(mem *memory.Memory, gpa uint64, v uint16) {
	binary.LittleEndian.PutUint16(mem.RegionHost(0)[gpa:], v)
}

func getU16(mem *memory.Memory, gpa uint64) uint16 {
	return binary.LittleEndian.Uint16(mem.RegionHost(0)[gpa:])
}

// publish puts head in avail ring slot idx and sets avail idx to idx+1.
func publish(mem *memory.Memory, idx, head uint16) {
	putU16(mem, tAvail+4+2*uint64(idx%tQSize), head)
	putU16(mem, tAvail+2, idx+1)
}

func TestPopChains(t *testing.T) {
	type d struct {
		i     uint16
		addr  uint64
		n     uint32
		flags uint16
		next  uint16
	}
	tests := []struct {
		name     string
		indirect bool
		descs    []d
		table    []d // indirect table at tTable
		wantR    []Buffer
		wantW    []Buffer
		wantErr  bool
	}{
		{name: "single readable", descs: []d{{0, tBuf, 10, 0, 0}}, wantR: []Buffer{{tBuf, 10}}},
		{name: "readable then writable", descs: []d{{0, tBuf, 10, descFNext, 3}, {3, tBuf + 0x100, 20, descFWrite, 0}},
			wantR: []Buffer{{tBuf, 10}}, wantW: []Buffer{{tBuf + 0x100, 20}}},
		{name: "zero-length buffer skipped", descs: []d{{0, 0, 0, descFNext, 1}, {1, tBuf, 4, descFWrite, 0}}, wantW: []Buffer{{tBuf, 4}}},
		{name: "indirect", indirect: true, descs: []d{{0, tTable, 32, descFIndirect, 0}},
			table: []d{{0, tBuf, 8, descFNext, 1}, {1, tBuf + 8, 8, descFWrite, 0}},
			wantR: []Buffer{{tBuf, 8}}, wantW: []Buffer{{tBuf + 8, 8}}},
		{name: "direct then indirect", indirect: true, descs: []d{{0, tBuf, 1, descFNext, 1}, {1, tTable, 16, descFIndirect, 0}},
			table: []d{{0, tBuf + 8, 8, descFWrite, 0}},
			wantR: []Buffer{{tBuf, 1}}, wantW: []Buffer{{tBuf + 8, 8}}},
		{name: "loop", descs: []d{{0, tBuf, 1, descFNext, 1}, {1, tBuf, 1, descFNext, 0}}, wantErr: true},
		{name: "self loop", descs: []d{{0, tBuf, 1, descFNext, 0}}, wantErr: true},
		{name: "next out of range", descs: []d{{0, tBuf, 1, descFNext, tQSize}}, wantErr: true},
		{name: "buffer beyond RAM", descs: []d{{0, tRAM - 4, 8, 0, 0}}, wantErr: true},
		{name: "address and length wrap", descs: []d{{0, ^uint64(0) - 3, 16, 0, 0}}, wantErr: true},
		{name: "readable after writable", descs: []d{{0, tBuf, 1, descFWrite | descFNext, 1}, {1, tBuf, 1, 0, 0}}, wantErr: true},
		{name: "indirect without feature", descs: []d{{0, tTable, 16, descFIndirect, 0}}, table: []d{{0, tBuf, 1, 0, 0}}, wantErr: true},
		{name: "indirect length not a multiple of 16", indirect: true, descs: []d{{0, tTable, 17, descFIndirect, 0}}, wantErr: true},
		{name: "indirect length zero", indirect: true, descs: []d{{0, tTable, 0, descFIndirect, 0}}, wantErr: true},
		{name: "indirect longer than the queue", indirect: true, descs: []d{{0, tTable, 16 * (tQSize + 1), descFIndirect, 0}}, wantErr: true},
		{name: "indirect with NEXT", indirect: true, descs: []d{{0, tTable, 16, descFIndirect | descFNext, 1}}, table: []d{{0, tBuf, 1, 0, 0}}, wantErr: true},
		{name: "nested indirect", indirect: true, descs: []d{{0, tTable, 32, descFIndirect, 0}},
			table: []d{{0, tBuf, 1, descFNext, 1}, {1, tTable, 16, descFIndirect, 0}}, wantErr: true},
		{name: "indirect table outside RAM", indirect: true, descs: []d{{0, tRAM - 16, 32, descFIndirect, 0}}, wantErr: true},
		{name: "loop inside indirect table", indirect: true, descs: []d{{0, tTable, 32, descFIndirect, 0}},
			table: []d{{0, tBuf, 1, descFNext, 1}, {1, tBuf, 1, descFNext, 0}}, wantErr: true},
		{name: "next out of indirect table", indirect: true, descs: []d{{0, tTable, 32, descFIndirect, 0}},
			table: []d{{0, tBuf, 1, descFNext, 2}}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, mem := testQueue(t, tt.indirect, false)
			for _, x := range tt.descs {
				putDesc(mem, tDesc, x.i, x.addr, x.n, x.flags, x.next)
			}
			for _, x := range tt.table {
				putDesc(mem, tTable, x.i, x.addr, x.n, x.flags, x.next)
			}
			publish(mem, 0, 0)
			before := append([]byte(nil), mem.RegionHost(0)[tDesc:tAvail+0x100]...)
			c, err := q.Pop()
			if tt.wantErr {
				if !errors.Is(err, ErrQueueBroken) || q.Broken() == nil {
					t.Fatalf("err = %v, want ErrQueueBroken", err)
				}
				if _, err := q.Pop(); err == nil {
					t.Error("a broken queue served another chain")
				}
				return
			}
			if err != nil || c == nil {
				t.Fatalf("Pop = %v, %v", c, err)
			}
			if !equalBufs(c.Readable, tt.wantR) || !equalBufs(c.Writable, tt.wantW) {
				t.Errorf("chain R %v W %v, want R %v W %v", c.Readable, c.Writable, tt.wantR, tt.wantW)
			}
			if err := q.PushUsed(c.Head, uint32(c.WritableLen())); err != nil {
				t.Fatal(err)
			}
			if string(before) != string(mem.RegionHost(0)[tDesc:tAvail+0x100]) {
				t.Error("the device wrote driver-owned memory")
			}
			if got := getU16(mem, tUsed+2); got != 1 {
				t.Errorf("used idx %d", got)
			}
		})
	}
}

func equalBufs(a, b []Buffer) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestAvailIndexJump(t *testing.T) {
	tests := []struct {
		name    string
		idx     uint16
		wantErr bool
	}{
		{"empty", 0, false},
		{"full ring", tQSize, false},
		{"more than the ring", tQSize + 1, true},
		{"backwards", 0xffff, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, mem := testQueue(t, false, false)
			putDesc(mem, tDesc, 0, tBuf, 1, 0, 0)
			putU16(mem, tAvail+2, tt.idx)
			_, err := q.Pop()
			if (err != nil) != tt.wantErr {
				t.Errorf("err = %v", err)
			}
		})
	}
}

func TestPushUsedErrors(t *testing.T) {
	q, mem := testQueue(t, false, false)
	if err := q.PushUsed(0, 1); err == nil {
		t.Error("PushUsed without an outstanding chain accepted")
	}
	putDesc(mem, tDesc, 0, tBuf, 1, 0, 0)
	publish(mem, 0, 0)
	if _, err := q.Pop(); err != nil {
		t.Fatal(err)
	}
	if err := q.PushUsed(tQSize, 1); err == nil {
		t.Error("PushUsed of a head beyond the queue accepted")
	}
	if err := q.PushUsed(0, 1); err != nil {
		t.Error(err)
	}
}

func TestNeedsInterrupt(t *testing.T) {
	tests := []struct {
		name       string
		eventIdx   bool
		availFlags uint16
		usedEvent  uint16
		pushes     int
		want       bool
	}{
		{"no pushes", false, 0, 0, 0, false},
		{"plain", false, 0, 0, 1, true},
		{"NO_INTERRUPT", false, availFNoIntr, 0, 1, false},
		{"event idx reached", true, 0, 0, 1, true},
		{"event idx passed within the batch", true, 0, 1, 3, true},
		{"event idx not reached", true, 0, 5, 2, false},
		{"event idx ignores NO_INTERRUPT", true, availFNoIntr, 0, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, mem := testQueue(t, false, tt.eventIdx)
			putU16(mem, tAvail, tt.availFlags)
			putU16(mem, tAvail+4+2*tQSize, tt.usedEvent)
			for i := 0; i < tt.pushes; i++ {
				putDesc(mem, tDesc, uint16(i), tBuf, 1, 0, 0)
				publish(mem, uint16(i), uint16(i))
				c, err := q.Pop()
				if err != nil || c == nil {
					t.Fatal(c, err)
				}
				if err := q.PushUsed(c.Head, 0); err != nil {
					t.Fatal(err)
				}
			}
			got, err := q.NeedsInterrupt()
			if err != nil || got != tt.want {
				t.Errorf("NeedsInterrupt = %v, %v; want %v", got, err, tt.want)
			}
			if again, _ := q.NeedsInterrupt(); again {
				t.Error("asked twice for the same entries")
			}
		})
	}
}

func TestArmNotify(t *testing.T) {
	q, mem := testQueue(t, false, true)
	putDesc(mem, tDesc, 0, tBuf, 1, 0, 0)
	publish(mem, 0, 0)
	if c, err := q.Pop(); err != nil || c == nil {
		t.Fatal(c, err)
	}
	more, err := q.ArmNotify()
	if err != nil || more {
		t.Fatalf("ArmNotify = %v, %v", more, err)
	}
	if got := getU16(mem, tUsed+4+8*tQSize); got != 1 {
		t.Errorf("avail_event = %d, want 1", got)
	}
	publish(mem, 1, 0) // the driver adds a buffer after the device looked
	if more, _ := q.ArmNotify(); !more {
		t.Error("ArmNotify missed a buffer added after the last Pop")
	}
}

// TestDisableNotify checks the notification suppression around a
// worker's pass: without VIRTIO_F_EVENT_IDX, VIRTQ_USED_F_NO_NOTIFY is set
// while the device drains the queue and cleared when it re-arms; with it,
// the used flags are never written and avail_event moves only on
// re-arming.
func TestDisableNotify(t *testing.T) {
	tests := []struct {
		name         string
		eventIdx     bool
		wantDuring   uint16 // used flags between DisableNotify and ArmNotify
		wantEventMid uint16 // avail_event then
	}{
		{"without EVENT_IDX", false, usedFNoNotify, 0},
		{"with EVENT_IDX", true, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, mem := testQueue(t, false, tt.eventIdx)
			putDesc(mem, tDesc, 0, tBuf, 1, 0, 0)
			publish(mem, 0, 0)
			if err := q.DisableNotify(); err != nil {
				t.Fatal(err)
			}
			if err := q.DisableNotify(); err != nil { // idempotent
				t.Fatal(err)
			}
			if got := getU16(mem, tUsed); got != tt.wantDuring {
				t.Errorf("used flags while draining = %#x, want %#x", got, tt.wantDuring)
			}
			if c, err := q.Pop(); err != nil || c == nil {
				t.Fatal(c, err)
			}
			if got := getU16(mem, tUsed+4+8*tQSize); got != tt.wantEventMid {
				t.Errorf("avail_event while draining = %d, want %d", got, tt.wantEventMid)
			}
			if more, err := q.ArmNotify(); err != nil || more {
				t.Fatalf("ArmNotify = %v, %v", more, err)
			}
			if got := getU16(mem, tUsed); got != 0 {
				t.Errorf("used flags after ArmNotify = %#x, want 0", got)
			}
			wantEvent := uint16(0)
			if tt.eventIdx {
				wantEvent = 1
			}
			if got := getU16(mem, tUsed+4+8*tQSize); got != wantEvent {
				t.Errorf("avail_event after ArmNotify = %d, want %d", got, wantEvent)
			}
		})
	}
}

// TestPopIntoReuse takes a long chain, then a shorter one of the other
// direction, into the same Chain: nothing of the first shows in the
// second.
func TestPopIntoReuse(t *testing.T) {
	q, mem := testQueue(t, false, false)
	putDesc(mem, tDesc, 0, tBuf, 10, descFNext, 1)
	putDesc(mem, tDesc, 1, tBuf+16, 20, descFNext, 2)
	putDesc(mem, tDesc, 2, tBuf+64, 30, descFWrite, 0)
	putDesc(mem, tDesc, 3, tBuf+128, 40, descFWrite, 0)
	publish(mem, 0, 0)
	publish(mem, 1, 3)
	want := []Chain{
		{Head: 0, Readable: []Buffer{{tBuf, 10}, {tBuf + 16, 20}}, Writable: []Buffer{{tBuf + 64, 30}}},
		{Head: 3, Writable: []Buffer{{tBuf + 128, 40}}},
	}
	var c Chain
	for i, w := range want {
		if ok, err := q.PopInto(&c); !ok || err != nil {
			t.Fatalf("chain %d: PopInto = %v, %v", i, ok, err)
		}
		if c.Head != w.Head || !slices.Equal(c.Readable, w.Readable) || !slices.Equal(c.Writable, w.Writable) {
			t.Errorf("chain %d: %+v, want %+v", i, c, w)
		}
	}
	if ok, err := q.PopInto(&c); ok || err != nil {
		t.Errorf("empty ring: PopInto = %v, %v", ok, err)
	}
}

// TestPopIntoAllocs checks that taking and returning chains into a reused
// Chain allocates nothing once its arrays have grown, for direct and
// indirect chains.
func TestPopIntoAllocs(t *testing.T) {
	tests := []struct {
		name     string
		indirect bool
	}{
		{"direct", false},
		{"indirect", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, mem := testQueue(t, tt.indirect, true)
			if tt.indirect {
				putDesc(mem, tDesc, 0, tTable, 3*16, descFIndirect, 0)
				putDesc(mem, tTable, 0, tBuf, 12, descFNext, 1)
				putDesc(mem, tTable, 1, tBuf+64, 1500, descFNext, 2)
				putDesc(mem, tTable, 2, tBuf+4096, 64, descFWrite, 0)
			} else {
				putDesc(mem, tDesc, 0, tBuf, 12, descFNext, 1)
				putDesc(mem, tDesc, 1, tBuf+64, 1500, descFNext, 2)
				putDesc(mem, tDesc, 2, tBuf+4096, 64, descFWrite, 0)
			}
			var c Chain
			idx := uint16(0)
			round := func() {
				publish(mem, idx, 0)
				idx++
				ok, err := q.PopInto(&c)
				if !ok || err != nil || len(c.Readable) != 2 || len(c.Writable) != 1 {
					t.Fatalf("PopInto = %v, %v: %+v", ok, err, c)
				}
				if err := q.PushUsed(c.Head, 64); err != nil {
					t.Fatal(err)
				}
				if more, err := q.ArmNotify(); more || err != nil {
					t.Fatalf("ArmNotify = %v, %v", more, err)
				}
			}
			round() // grows c's arrays
			if raceEnabled {
				t.Skip("the race detector allocates")
			}
			if n := testing.AllocsPerRun(100, round); n != 0 {
				t.Errorf("%.1f allocations per chain, want 0", n)
			}
		})
	}
}

func TestRingsValid(t *testing.T) {
	tests := []struct {
		name                 string
		desc, driver, device uint64
		ok                   bool
	}{
		{"valid", tDesc, tAvail, tUsed, true},
		{"desc misaligned", tDesc + 8, tAvail, tUsed, false},
		{"avail misaligned", tDesc, tAvail + 1, tUsed, false},
		{"used misaligned", tDesc, tAvail, tUsed + 2, false},
		{"desc beyond RAM", tRAM - 16, tAvail, tUsed, false},
		{"used beyond RAM", tDesc, tAvail, tRAM - 8, false},
		{"in the MMIO hole", 0xc000_0000, tAvail, tUsed, false},
	}
	for _, tt := range tests {
		q, _ := testQueue(t, false, false)
		q.desc, q.driver, q.device = tt.desc, tt.driver, tt.device
		if err := q.ringsValid(); (err == nil) != tt.ok {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
}

func TestWritableFieldsSorted(t *testing.T) {
	for i := 1; i < len(writableFields); i++ {
		if writableFields[i][0] <= writableFields[i-1][0] {
			t.Fatalf("writableFields not in offset order at %d", i)
		}
	}
}

// FuzzQueueChains parses chains from random guest memory: the first bytes
// of the input become the descriptor table, the available ring and an
// indirect table. Pop must never panic, never return a buffer outside RAM
// and never return more buffers than the tables hold.
func FuzzQueueChains(f *testing.F) {
	seed := make([]byte, 16*tQSize+64)
	binary.LittleEndian.PutUint64(seed, tBuf)
	binary.LittleEndian.PutUint32(seed[8:], 64)
	f.Add(seed, uint16(1), true, true)
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 4, 0, 0, 0}, uint16(3), true, false)
	f.Fuzz(func(t *testing.T, data []byte, availIdx uint16, indirect, eventIdx bool) {
		q, mem := testQueue(t, indirect, eventIdx)
		host := mem.RegionHost(0)
		// Descriptor table, available ring and indirect tables come from data.
		n := copy(host[tDesc:tDesc+16*tQSize], data)
		data = data[n:]
		n = copy(host[tAvail+4:tAvail+4+2*tQSize+2], data)
		data = data[n:]
		copy(host[tTable:tTable+4096], data)
		putU16(mem, tAvail+2, availIdx)
		for i := 0; i < 2*tQSize; i++ {
			c, err := q.Pop()
			if err != nil {
				if !errors.Is(err, ErrQueueBroken) {
					t.Fatalf("error not ErrQueueBroken: %v", err)
				}
				return
			}
			if c == nil {
				return
			}
			if len(c.Readable)+len(c.Writable) > 2*tQSize {
				t.Fatalf("chain of %d buffers from tables of %d", len(c.Readable)+len(c.Writable), tQSize)
			}
			for _, b := range append(c.Readable, c.Writable...) {
				if !mem.Contains(b.Addr, uint64(b.Len)) || b.Len == 0 {
					t.Fatalf("buffer %+v", b)
				}
			}
			if err := q.PushUsed(c.Head, uint32(c.WritableLen())); err != nil {
				t.Fatal(err)
			}
			q.NeedsInterrupt()
			q.ArmNotify()
		}
	})
}

func TestUnpop(t *testing.T) {
	q, mem := testQueue(t, false, false)
	if err := q.Unpop(1); err == nil {
		t.Error("Unpop with nothing outstanding accepted")
	}
	for i := uint16(0); i < 3; i++ {
		putDesc(mem, tDesc, i, tBuf+0x100*uint64(i), 10+uint32(i), descFWrite, 0)
		publish(mem, i, i)
	}
	var heads []uint16
	for i := 0; i < 3; i++ {
		c, err := q.Pop()
		if err != nil || c == nil {
			t.Fatalf("pop %d: %v %v", i, c, err)
		}
		heads = append(heads, c.Head)
	}
	if err := q.PushUsed(heads[0], 1); err != nil {
		t.Fatal(err)
	}
	// Two chains are outstanding: three cannot be given back.
	if err := q.Unpop(3); err == nil {
		t.Error("Unpop of more chains than outstanding accepted")
	}
	if err := q.Unpop(-1); err == nil {
		t.Error("Unpop(-1) accepted")
	}
	if err := q.Unpop(2); err != nil {
		t.Fatal(err)
	}
	for _, want := range heads[1:] {
		c, err := q.Pop()
		if err != nil || c == nil || c.Head != want || c.Writable[0].Len != 10+uint32(want) {
			t.Fatalf("after Unpop: %+v %v, want head %d", c, err, want)
		}
	}
	if c, err := q.Pop(); c != nil || err != nil {
		t.Fatalf("ring should be empty: %+v %v", c, err)
	}
	if err := q.Unpop(0); err != nil {
		t.Errorf("Unpop(0): %v", err)
	}
}
