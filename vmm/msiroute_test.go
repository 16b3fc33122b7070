package vmm

import (
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"godwit/vmm/kvm"
)

// fakeMSIKVM records what msiRoutes asks of KVM.
type fakeMSIKVM struct {
	tables     [][]kvm.IRQRoutingEntry
	irqfds     map[uint32]int // gsi -> eventfd
	direct     []kvm.MSI
	routingErr error
	irqfdErr   error
}

func (f *fakeMSIKVM) SetGSIRouting(t []kvm.IRQRoutingEntry) error {
	if f.routingErr != nil {
		return f.routingErr
	}
	f.tables = append(f.tables, append([]kvm.IRQRoutingEntry(nil), t...))
	return nil
}

func (f *fakeMSIKVM) IRQFD(fd int, gsi uint32, flags uint32, resampleFD int) error {
	if f.irqfdErr != nil {
		return f.irqfdErr
	}
	if f.irqfds == nil {
		f.irqfds = map[uint32]int{}
	}
	f.irqfds[gsi] = fd
	return nil
}

func (f *fakeMSIKVM) SignalMSI(m kvm.MSI) (bool, error) {
	f.direct = append(f.direct, m)
	return true, nil
}

// eventCount reads (and resets) an eventfd's counter; 0 when nothing was
// signalled.
func eventCount(t *testing.T, fd int) uint64 {
	t.Helper()
	var b [8]byte
	n, err := unix.Read(fd, b[:])
	if errors.Is(err, unix.EAGAIN) {
		return 0
	}
	if err != nil || n != 8 {
		t.Fatalf("reading eventfd %d: n=%d err=%v", fd, n, err)
	}
	return binary.NativeEndian.Uint64(b[:])
}

func TestDefaultIRQRoutes(t *testing.T) {
	routes := defaultIRQRoutes()
	if len(routes) != 16*2+8 {
		t.Fatalf("%d default routes, want 40", len(routes))
	}
	chips := map[uint32][]uint32{}
	for _, r := range routes {
		if r.Type != kvm.IRQRoutingIRQChip {
			t.Fatalf("GSI %d: type %d", r.GSI, r.Type)
		}
		chips[r.GSI] = append(chips[r.GSI], r.U[0])
		wantPin := r.GSI
		if r.U[0] == kvm.IRQChipPICSlave {
			wantPin = r.GSI - 8
		}
		if r.U[1] != wantPin {
			t.Errorf("GSI %d chip %d: pin %d, want %d", r.GSI, r.U[0], r.U[1], wantPin)
		}
	}
	for gsi := uint32(0); gsi < firstMSIGSI; gsi++ {
		want := 2
		if gsi >= 16 {
			want = 1
		}
		if len(chips[gsi]) != want {
			t.Errorf("GSI %d has %d routes, want %d", gsi, len(chips[gsi]), want)
		}
	}
}

func TestMSIRoutes(t *testing.T) {
	msgA := msiMessage{0xfee00000, 0x4021}
	msgB := msiMessage{0xfee01000, 0x4022}
	tests := []struct {
		name       string
		routing    bool
		routingErr error
		irqfdErr   error
		signals    []msiMessage
		wantRoutes int
		wantDirect int
		wantCounts map[msiMessage]uint64
	}{
		{"one message twice", true, nil, nil, []msiMessage{msgA, msgA}, 1, 0, map[msiMessage]uint64{msgA: 2}},
		{"two messages", true, nil, nil, []msiMessage{msgA, msgB, msgA}, 2, 0, map[msiMessage]uint64{msgA: 2, msgB: 1}},
		{"no routing capability", false, nil, nil, []msiMessage{msgA, msgB}, 0, 2, nil},
		{"routing refused", true, errors.New("EINVAL"), nil, []msiMessage{msgA, msgA}, 0, 2, nil},
		{"irqfd refused", true, nil, errors.New("EINVAL"), []msiMessage{msgA, msgB}, 0, 2, nil},
		{"logical destination", true, nil, nil, []msiMessage{{0xfee00004, 0x4021}}, 0, 1, nil},
		{"lowest priority", true, nil, nil, []msiMessage{{0xfee00000, 0x4121}}, 0, 1, nil},
		{"broadcast", true, nil, nil, []msiMessage{{0xfeeff000, 0x4021}}, 0, 1, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k := &fakeMSIKVM{routingErr: tc.routingErr, irqfdErr: tc.irqfdErr}
			r := newMSIRoutes(k, tc.routing, nil)
			defer r.close()
			for _, m := range tc.signals {
				if err := r.SignalMSI(m.addr, m.data); err != nil {
					t.Fatalf("SignalMSI(%#x, %#x): %v", m.addr, m.data, err)
				}
			}
			if got := r.routeCount(); got != tc.wantRoutes {
				t.Errorf("%d routes, want %d", got, tc.wantRoutes)
			}
			if len(k.direct) != tc.wantDirect {
				t.Errorf("%d KVM_SIGNAL_MSI calls, want %d", len(k.direct), tc.wantDirect)
			}
			for m, want := range tc.wantCounts {
				route, ok := r.routes[m]
				if !ok {
					t.Fatalf("message %+v has no route", m)
				}
				if k.irqfds[route.gsi] != route.fd {
					t.Errorf("GSI %d: irqfd %d registered, route has %d", route.gsi, k.irqfds[route.gsi], route.fd)
				}
				if got := eventCount(t, route.fd); got != want {
					t.Errorf("message %+v signalled %d times, want %d", m, got, want)
				}
			}
			if tc.wantRoutes > 0 {
				last := k.tables[len(k.tables)-1]
				if len(last) != len(defaultIRQRoutes())+tc.wantRoutes {
					t.Errorf("last routing table has %d entries, want defaults + %d", len(last), tc.wantRoutes)
				}
				for _, e := range last[len(defaultIRQRoutes()):] {
					if e.Type != kvm.IRQRoutingMSI || e.GSI < firstMSIGSI {
						t.Errorf("MSI route %+v: wrong type or GSI", e)
					}
				}
			}
		})
	}
}

func TestMSIRoutesBounded(t *testing.T) {
	k := &fakeMSIKVM{}
	r := newMSIRoutes(k, true, nil)
	defer r.close()
	for i := 0; i < maxMSIRoutes+3; i++ {
		if err := r.SignalMSI(0xfee00000|uint64(i/256)<<12, uint32(i%256)); err != nil {
			t.Fatal(err)
		}
	}
	if r.routeCount() != maxMSIRoutes || len(k.direct) != 3 {
		t.Errorf("%d routes and %d direct deliveries, want %d and 3", r.routeCount(), len(k.direct), maxMSIRoutes)
	}
}

func TestMSIRoutesAfterClose(t *testing.T) {
	k := &fakeMSIKVM{}
	r := newMSIRoutes(k, true, nil)
	if err := r.SignalMSI(0xfee00000, 1); err != nil {
		t.Fatal(err)
	}
	r.close()
	r.close()
	if err := r.SignalMSI(0xfee00000, 1); err != nil {
		t.Fatal(err)
	}
	if r.routeCount() != 0 || len(k.direct) != 1 {
		t.Errorf("after close: %d routes, %d direct deliveries; want 0 and 1", r.routeCount(), len(k.direct))
	}
}
