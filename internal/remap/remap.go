// Package remap checks the OLD=NEW maps of `godwit receive` (--disk-map,
// --tap-map) against what the migrating VM actually has.
package remap

import (
	"fmt"
	"slices"
)

// Unused returns an error naming every key of m the source VM does not
// have, or nil when all were used. flag is the option ("--disk-map"),
// kind what its keys name ("disk"), used the keys that matched and have
// the source VM's names, for the message.
func Unused(flag, kind string, m map[string]string, used map[string]bool, have []string) error {
	var unused []string
	for k := range m {
		if !used[k] {
			unused = append(unused, k)
		}
	}
	if len(unused) == 0 {
		return nil
	}
	slices.Sort(unused)
	return fmt.Errorf("%s %q: the source VM has no such %s (its %ss: %q)", flag, unused, kind, kind, have)
}
