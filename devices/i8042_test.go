package devices

import "testing"

func TestI8042(t *testing.T) {
	type op struct {
		port  byte // 'c' command port write, 'd' data port write, 's' status read, 'r' data read
		val   byte // written value or expected read
		reset int  // expected reset count after this op
	}
	tests := []struct {
		name string
		ops  []op
	}{
		{"idle status", []op{{'s', i8042StatusIdle, 0}}},
		{"pulse reset 0xfe", []op{{'c', 0xfe, 1}}},
		{"pulse 0xfc includes reset", []op{{'c', 0xfc, 1}}},
		{"pulse 0xff is a no-op", []op{{'c', 0xff, 0}, {'s', i8042StatusIdle, 0}}},
		{"output port bit 0 clear resets", []op{{'c', 0xd1, 0}, {'d', 0x00, 1}}},
		{"output port bit 0 set", []op{{'c', 0xd1, 0}, {'d', 0xdf, 0}, {'c', 0xd0, 0}, {'r', 0xdf, 0}}},
		{"read output port", []op{{'c', 0xd0, 0}, {'s', i8042StatusIdle | i8042StatusOBF, 0}, {'r', outPortReset | outPortA20, 0}}},
		{"self test", []op{{'c', 0xaa, 0}, {'s', i8042StatusIdle | i8042StatusOBF, 0}, {'r', 0x55, 0}, {'s', i8042StatusIdle, 0}}},
		{"keyboard interface test", []op{{'c', 0xab, 0}, {'r', 0x00, 0}, {'s', i8042StatusIdle, 0}}},
		{"aux interface test fails", []op{{'c', 0xa9, 0}, {'r', 0x01, 0}}},
		{"command byte round trip", []op{
			{'c', 0x20, 0}, {'s', i8042StatusIdle | i8042StatusOBF, 0}, {'r', 0x65, 0},
			{'c', 0x60, 0}, {'s', i8042StatusIdle, 0}, {'d', 0x34, 0},
			{'c', 0x20, 0}, {'r', 0x34, 0},
		}},
		{"aux and keyboard enable bits", []op{
			{'c', 0xa8, 0}, {'c', 0x20, 0}, {'r', 0x45, 0},
			{'c', 0xa7, 0}, {'c', 0x20, 0}, {'r', 0x65, 0},
			{'c', 0xad, 0}, {'c', 0x20, 0}, {'r', 0x75, 0},
			{'c', 0xae, 0}, {'c', 0x20, 0}, {'r', 0x65, 0},
		}},
		{"data without command is ignored", []op{{'d', 0x00, 0}, {'c', 0x20, 0}, {'r', 0x65, 0}}},
		{"command cancels pending data", []op{{'c', 0xd1, 0}, {'c', 0xab, 0}, {'d', 0x00, 0}, {'r', 0x00, 0}}},
		{"aux loopback answers without the aux bit", []op{{'c', 0xd3, 0}, {'d', 0x5a, 0}, {'s', i8042StatusIdle | i8042StatusOBF, 0}, {'r', 0x5a, 0}, {'s', i8042StatusIdle, 0}}},
		{"keyboard buffer write echoes", []op{{'c', 0xd2, 0}, {'d', 0x1c, 0}, {'s', i8042StatusIdle | i8042StatusOBF, 0}, {'r', 0x1c, 0}}},
		{"mouse write swallows data", []op{{'c', 0xd4, 0}, {'d', 0xfe, 0}, {'s', i8042StatusIdle, 0}}},
		{"unknown command", []op{{'c', 0x12, 0}, {'s', i8042StatusIdle, 0}}},
		{"keyboard reset", []op{{'d', 0xff, 0}, {'s', i8042StatusIdle | i8042StatusOBF, 0}, {'r', 0xfa, 0}, {'r', 0xaa, 0}, {'s', i8042StatusIdle, 0}}},
		{"keyboard identify", []op{{'d', 0xf2, 0}, {'r', 0xfa, 0}, {'r', 0xab, 0}, {'r', 0x83, 0}, {'s', i8042StatusIdle, 0}}},
		{"keyboard LEDs take a parameter", []op{{'d', 0xed, 0}, {'r', 0xfa, 0}, {'d', 0x07, 0}, {'r', 0xfa, 0}, {'d', 0xee, 0}, {'r', 0xee, 0}}},
		{"controller reply before keyboard bytes", []op{{'d', 0xf4, 0}, {'c', 0xaa, 0}, {'r', 0x55, 0}, {'r', 0xfa, 0}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resets := 0
			k := NewI8042(func() { resets++ })
			// Exercise the two-device registration the VMM uses.
			bus := NewBus("pio")
			if err := bus.Register(0x60, 1, "i8042-data", k.DataPort()); err != nil {
				t.Fatal(err)
			}
			if err := bus.Register(0x64, 1, "i8042-command", k.CommandPort()); err != nil {
				t.Fatal(err)
			}
			for i, o := range tt.ops {
				b := []byte{o.val}
				switch o.port {
				case 'c':
					bus.Write(0x64, b)
				case 'd':
					bus.Write(0x60, b)
				case 's', 'r':
					port := uint64(0x64)
					if o.port == 'r' {
						port = 0x60
					}
					b[0] = 0xee
					bus.Read(port, b)
					if b[0] != o.val {
						t.Fatalf("op %d: read %#x = %#x, want %#x", i, port, b[0], o.val)
					}
				}
				if resets != o.reset {
					t.Fatalf("op %d: %d resets, want %d", i, resets, o.reset)
				}
			}
		})
	}
}

// TestI8042Window checks the single five-port registration and odd
// accesses.
func TestI8042Window(t *testing.T) {
	resets := 0
	k := NewI8042(func() { resets++ })
	k.Write(I8042CommandOffset, []byte{0xaa, 0x00})
	data := make([]byte, 2)
	k.Read(I8042CommandOffset, data)
	if data[0] != i8042StatusIdle|i8042StatusOBF || data[1] != 0xff {
		t.Errorf("wide status read = % x, want 15 ff", data)
	}
	k.Read(I8042DataOffset, data[:1])
	if data[0] != 0x55 {
		t.Errorf("self test reply %#x, want 0x55", data[0])
	}
	for _, off := range []uint64{1, 2, 3, 5, ^uint64(0)} {
		k.Write(off, []byte{0xfe})
		k.Read(off, data[:1])
		if data[0] != 0xff {
			t.Errorf("offset %#x reads %#x, want 0xff", off, data[0])
		}
	}
	k.Write(I8042CommandOffset, nil)
	k.Read(I8042CommandOffset, nil)
	p := k.CommandPort()
	p.Write(1, []byte{0xfe})
	p.Read(1, data[:1])
	if resets != 0 || data[0] != 0xff {
		t.Errorf("stray accesses: %d resets, read %#x", resets, data[0])
	}
	NewI8042(nil).Write(I8042CommandOffset, []byte{0xfe}) // nil reset is allowed
}

// recordingLine records IRQ level changes.
type recordingLine struct{ levels []bool }

func (r *recordingLine) SetLevel(high bool) { r.levels = append(r.levels, high) }

// TestI8042KeyboardIRQ checks that keyboard replies raise IRQ 1 only when
// the command byte enables it, with a new edge for every byte.
func TestI8042KeyboardIRQ(t *testing.T) {
	tests := []struct {
		name string
		ctr  byte
		want []bool
	}{
		{"enabled", 0x65, []bool{true, false, true, false, true, false}},
		{"disabled", 0x64, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := NewI8042(nil)
			irq := &recordingLine{}
			k.SetIRQ(irq)
			k.Write(I8042CommandOffset, []byte{0x60})
			k.Write(I8042DataOffset, []byte{tt.ctr})
			k.Write(I8042DataOffset, []byte{0xf2}) // identify: three bytes
			b := make([]byte, 1)
			for range 3 {
				k.Read(I8042DataOffset, b)
			}
			if len(irq.levels) != len(tt.want) {
				t.Fatalf("IRQ levels %v, want %v", irq.levels, tt.want)
			}
			for i := range tt.want {
				if irq.levels[i] != tt.want[i] {
					t.Fatalf("IRQ levels %v, want %v", irq.levels, tt.want)
				}
			}
		})
	}
}
