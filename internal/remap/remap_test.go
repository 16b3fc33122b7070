package remap

import "testing"

func TestUnused(t *testing.T) {
	for _, tt := range []struct {
		name string
		m    map[string]string
		used map[string]bool
		want string
	}{
		{"all used", map[string]string{"a": "x"}, map[string]bool{"a": true}, ""},
		{"empty map", nil, nil, ""},
		{"two unused, sorted", map[string]string{"z": "1", "b": "2", "a": "3"}, map[string]bool{"a": true},
			`--disk-map ["b" "z"]: the source VM has no such disk (its disks: ["a" "c"])`},
	} {
		err := Unused("--disk-map", "disk", tt.m, tt.used, []string{"a", "c"})
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}
