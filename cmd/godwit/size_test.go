package main

import (
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    uint64
		wantErr string // substring; "" = must succeed
	}{
		{in: "4096", want: 4096},
		{in: "0", want: 0},
		{in: "256M", want: 256 << 20},
		{in: "1G", want: 1 << 30},
		{in: "2g", want: 2 << 30},
		{in: "4k", want: 4096},
		{in: "1T", want: 1 << 40},
		{in: "16383P", wantErr: "unknown suffix"},
		{in: "0x100000", want: 1 << 20},
		{in: "0XfeE00000", want: 0xfee00000},
		{in: "18446744073709551615", want: 1<<64 - 1},
		{in: "16777215T", want: 16777215 << 40},
		{in: "", wantErr: "empty"},
		{in: "-1", wantErr: "not a number"},
		{in: "+1", wantErr: "not a number"},
		{in: "12Q", wantErr: `unknown suffix 'Q'`},
		{in: "M", wantErr: "no number"},
		{in: "1.5G", wantErr: "not a number"},
		{in: " 1G", wantErr: "not a number"},
		{in: "1G ", wantErr: "unknown suffix"},
		{in: "1_000", wantErr: "not a number"},
		{in: "1GB", wantErr: "unknown suffix"},
		{in: "0x", wantErr: "not a number"},
		{in: "0x10M", wantErr: "not a number"},
		{in: "18446744073709551616", wantErr: "overflows"},
		{in: "16777216T", wantErr: "overflows"},
		{in: "17179869184G", wantErr: "overflows"},
		{in: "0x10000000000000000", wantErr: "overflows"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseSize(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseSize(%q) = %d, %v; want an error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestFormatSize(t *testing.T) {
	tests := []struct {
		in   uint64
		want string
	}{
		{0, "0 B"},
		{512, "512 B"},
		{4096, "4 KiB"},
		{1536, "1.5 KiB"},
		{256 << 20, "256 MiB"},
		{3 << 29, "1.5 GiB"},
		{1 << 30, "1 GiB"},
		{2 << 40, "2 TiB"},
	}
	for _, tt := range tests {
		if got := formatSize(tt.in); got != tt.want {
			t.Errorf("formatSize(%d) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
