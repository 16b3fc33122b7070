package devices

import "testing"

func TestSink(t *testing.T) {
	s := NewSink("post")
	if s.Name() != "post" {
		t.Errorf("Name() = %q", s.Name())
	}
	for _, v := range []byte{0x10, 0x20, 0xaa} {
		s.Write(0, []byte{v})
	}
	data := []byte{1, 2, 3, 4}
	s.Read(0, data)
	for i, v := range data {
		if v != 0 {
			t.Errorf("byte %d reads %#x, want 0", i, v)
		}
	}
	s.Write(0, nil)
	if r, w := s.Counts(); r != 1 || w != 4 {
		t.Errorf("Counts() = %d, %d; want 1, 4", r, w)
	}
	if s.Last() != 0xaa {
		t.Errorf("Last() = %#x, want 0xaa", s.Last())
	}
}

func TestPort92(t *testing.T) {
	tests := []struct {
		name      string
		writes    []byte
		wantRead  byte
		wantReset int
	}{
		{"reset default", nil, port92A20, 0},
		{"A20 off", []byte{0x00}, 0x00, 0},
		{"A20 on again", []byte{0x00, 0x02}, 0x02, 0},
		{"other bits ignored", []byte{0xfc}, 0x00, 0},
		{"reset bit", []byte{0x03}, 0x02, 1},
		{"reset twice", []byte{0x01, 0x01}, 0x00, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resets := 0
			p := NewPort92(func() { resets++ })
			for _, v := range tt.writes {
				p.Write(0, []byte{v})
			}
			p.Write(1, []byte{0x01}) // not the port
			p.Write(0, nil)
			data := []byte{0, 0}
			p.Read(0, data)
			if data[0] != tt.wantRead || data[1] != 0xff {
				t.Errorf("read % x, want %02x ff", data, tt.wantRead)
			}
			if resets != tt.wantReset {
				t.Errorf("%d resets, want %d", resets, tt.wantReset)
			}
		})
	}
	NewPort92(nil).Write(0, []byte{1}) // nil reset is allowed
}
