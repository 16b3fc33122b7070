package net

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"godwit/devices"
)

func testDevice(t testing.TB) *Device {
	t.Helper()
	dev, err := New(newPipeTap(t), Options{MAC: testMAC})
	if err != nil {
		t.Fatal(err)
	}
	return dev
}

func TestStateRoundTrip(t *testing.T) {
	for _, s := range []State{
		{MAC: testMAC, Status: StatusLinkUp},
		{MAC: testMAC, Status: StatusLinkUp | StatusAnnounce},
		{MAC: testMAC, Status: StatusLinkUp, Backlog: [][]byte{packet(0, 0, 0, 0, ethFrame(60, 1)), packet(hdrFNeedsCsum, 0, 34, 16, ethFrame(1514, 2))}},
	} {
		b, err := s.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		dev := testDevice(t)
		if err := dev.RestoreConfigState(b); err != nil {
			t.Fatal(err)
		}
		again, err := dev.SaveConfigState()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, b) {
			t.Errorf("save→restore→save differs:\n%x\n%x", again, b)
		}
		var back State
		if err := back.UnmarshalBinary(b); err != nil || back.MAC != s.MAC || back.Status != s.Status || len(back.Backlog) != len(s.Backlog) {
			t.Errorf("decoded %+v, %v", back, err)
		}
	}
}

func TestRestoreConfigStateRejects(t *testing.T) {
	frame := packet(0, 0, 0, 0, ethFrame(60, 1))
	enc := func(s State) []byte {
		// Encoded without MarshalBinary's checks, to build invalid states.
		le := binary.LittleEndian
		b := le.AppendUint16(nil, StateVersion)
		b = append(b, s.MAC[:]...)
		b = le.AppendUint16(b, s.Status)
		b = le.AppendUint16(b, uint16(len(s.Backlog)))
		for _, f := range s.Backlog {
			b = le.AppendUint32(b, uint32(len(f)))
			b = append(b, f...)
		}
		return b
	}
	good := enc(State{MAC: testMAC, Status: StatusLinkUp, Backlog: [][]byte{frame}})
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	many := make([][]byte, MaxBacklogFrames+1)
	for i := range many {
		many[i] = frame
	}
	huge := make([][]byte, MaxBacklogBytes/maxPacket+1)
	for i := range huge {
		huge[i] = make([]byte, maxPacket)
	}
	other := testMAC
	other[5]++
	for _, tt := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"truncated header", good[:stateHeaderSize-1]},
		{"truncated frame length", good[:stateHeaderSize+2]},
		{"truncated frame", good[:len(good)-1]},
		{"trailing byte", append(append([]byte(nil), good...), 0)},
		{"version", mut(func(b []byte) []byte { b[0] = 2; return b })},
		{"zero MAC", enc(State{Status: StatusLinkUp})},
		{"multicast MAC", enc(State{MAC: [6]byte{1, 0, 0, 0, 0, 1}, Status: StatusLinkUp})},
		{"another MAC", enc(State{MAC: other, Status: StatusLinkUp})},
		{"link down", enc(State{MAC: testMAC, Status: 0})},
		{"unknown status bit", enc(State{MAC: testMAC, Status: StatusLinkUp | 4})},
		{"too many frames", enc(State{MAC: testMAC, Status: StatusLinkUp, Backlog: many})},
		{"too many bytes", enc(State{MAC: testMAC, Status: StatusLinkUp, Backlog: huge})},
		{"runt frame", enc(State{MAC: testMAC, Status: StatusLinkUp, Backlog: [][]byte{frame[:hdrSize+13]}})},
		{"frame too large", enc(State{MAC: testMAC, Status: StatusLinkUp, Backlog: [][]byte{make([]byte, maxPacket+1)}})},
		{"frame length beyond the data", mut(func(b []byte) []byte { b[stateHeaderSize+2] = 0xff; return b })},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dev := testDevice(t)
			before, _ := dev.SaveConfigState()
			err := dev.RestoreConfigState(tt.data)
			if !errors.Is(err, devices.ErrInvalidState) {
				t.Fatalf("err = %v, want ErrInvalidState", err)
			}
			if now, _ := dev.SaveConfigState(); !bytes.Equal(now, before) {
				t.Error("a rejected restore changed the device")
			}
		})
	}
}

func TestStateMarshalRejects(t *testing.T) {
	for _, s := range []State{
		{},
		{MAC: testMAC},
		{MAC: testMAC, Status: StatusLinkUp, Backlog: [][]byte{{1, 2, 3}}},
	} {
		if _, err := s.MarshalBinary(); err == nil {
			t.Errorf("state %+v encoded", s)
		}
	}
}
