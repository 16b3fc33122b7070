package integration

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Diagnostics for a network that stops after a migration: what the
// destination's virtio devices and the host's taps and bridge looked like
// when the test gave up. Everything here only logs; a failure to read
// something is logged too and never fails the test by itself.

// logNetState logs the virtio devices of the VM behind the API socket
// sock (queue indices, ring fields, device counters: `godwit ctl status
// --json`), then the host's view of the test taps and bridge.
func logNetState(t *testing.T, what, sock string) {
	t.Helper()
	t.Logf("%s: network diagnostics follow", what)
	logVirtioDevices(t, sock)
	for _, name := range []string{netTapA, netTapB, netBridge} {
		t.Logf("host %s: %s", name, linkStats(name))
	}
	t.Logf("host %s ports: %s", netBridge, bridgePorts(netBridge))
	t.Logf("host %s forwarding database:\n%s", netBridge, bridgeFDB(netBridge))
}

// logVirtioDevices logs the "devices" part of the VM's status, one device
// a line.
func logVirtioDevices(t *testing.T, sock string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, godwitBin(t), "ctl", "--api-sock", sock, "status", "--json")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Logf("godwit ctl status --json: %v: %s", err, bytes.TrimSpace(stderr.Bytes()))
		return
	}
	var st struct {
		Devices []json.RawMessage `json:"devices"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		t.Logf("godwit ctl status --json: %v: %s", err, out)
		return
	}
	for _, d := range st.Devices {
		t.Logf("device: %s", d)
	}
}

// linkStats returns an interface's state and packet counters from sysfs.
func linkStats(name string) string {
	dir := filepath.Join("/sys/class/net", name)
	read := func(rel string) string {
		b, err := os.ReadFile(filepath.Join(dir, rel))
		if err != nil {
			return "?"
		}
		return strings.TrimSpace(string(b))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "operstate %s carrier %s", read("operstate"), read("carrier"))
	for _, c := range []string{"rx_packets", "rx_bytes", "rx_dropped", "rx_errors", "tx_packets", "tx_bytes", "tx_dropped", "tx_errors"} {
		fmt.Fprintf(&b, " %s %s", c, read("statistics/"+c))
	}
	return b.String()
}

// bridgePorts returns a bridge's ports with their port numbers and STP
// states, from sysfs.
func bridgePorts(br string) string {
	dir := filepath.Join("/sys/class/net", br, "brif")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, e := range ents {
		no, _ := os.ReadFile(filepath.Join(dir, e.Name(), "port_no"))
		state, _ := os.ReadFile(filepath.Join(dir, e.Name(), "state"))
		out = append(out, fmt.Sprintf("%s (port %s, state %s)", e.Name(), strings.TrimSpace(string(no)), strings.TrimSpace(string(state))))
	}
	return strings.Join(out, ", ")
}

// bridgeFDB returns a bridge's forwarding database: `bridge fdb show br
// BR` where iproute2 has it, else the entries of sysfs's brforward.
func bridgeFDB(br string) string {
	if _, err := exec.LookPath("bridge"); err == nil {
		out, err := exec.Command("bridge", "fdb", "show", "br", br).CombinedOutput()
		if err == nil {
			return strings.TrimSpace(string(out))
		}
	}
	b, err := os.ReadFile(filepath.Join("/sys/class/net", br, "brforward"))
	if err != nil {
		return err.Error()
	}
	ports := map[uint64]string{}
	if ents, err := os.ReadDir(filepath.Join("/sys/class/net", br, "brif")); err == nil {
		for _, e := range ents {
			no, _ := os.ReadFile(filepath.Join("/sys/class/net", br, "brif", e.Name(), "port_no"))
			if n, err := strconv.ParseUint(strings.TrimSpace(string(no)), 0, 16); err == nil {
				ports[n] = e.Name()
			}
		}
	}
	return formatFDB(b, ports)
}

// fdbEntrySize is the size of a struct __fdb_entry in brforward.
const fdbEntrySize = 16

// formatFDB formats brforward's records (struct __fdb_entry: MAC, port
// number low byte, is_local, ageing timer in clock ticks, port number
// high byte), one a line, naming ports from ports.
func formatFDB(b []byte, ports map[uint64]string) string {
	var lines []string
	for ; len(b) >= fdbEntrySize; b = b[fdbEntrySize:] {
		port := uint64(b[12])<<8 | uint64(b[6])
		name := ports[port]
		if name == "" {
			name = "port " + strconv.FormatUint(port, 10)
		}
		line := fmt.Sprintf("%s on %s ageing %d", net.HardwareAddr(b[:6]), name, binary.NativeEndian.Uint32(b[8:12]))
		if b[7] != 0 {
			line += " local"
		}
		lines = append(lines, line)
	}
	if len(b) != 0 {
		lines = append(lines, fmt.Sprintf("(%d trailing bytes)", len(b)))
	}
	return strings.Join(lines, "\n")
}

func TestFormatFDB(t *testing.T) {
	entry := func(mac [6]byte, port uint16, local bool, ageing uint32) []byte {
		e := append([]byte(nil), mac[:]...)
		e = append(e, byte(port), 0)
		if local {
			e[7] = 1
		}
		e = binary.NativeEndian.AppendUint32(e, ageing)
		return append(e, byte(port>>8), 0, 0, 0)
	}
	guest := [6]byte{0x02, 0, 0, 0, 0, 1}
	host := [6]byte{0x02, 0, 0, 0, 0, 2}
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, ""},
		{"named port", entry(guest, 2, false, 150), "02:00:00:00:00:01 on gwtap2 ageing 150"},
		{"local, unknown port", entry(host, 0x103, true, 0), "02:00:00:00:00:02 on port 259 ageing 0 local"},
		{"two", append(entry(guest, 1, false, 7), entry(host, 2, false, 9)...),
			"02:00:00:00:00:01 on gwtap1 ageing 7\n02:00:00:00:00:02 on gwtap2 ageing 9"},
		{"truncated", append(entry(guest, 1, false, 7), 1, 2, 3), "02:00:00:00:00:01 on gwtap1 ageing 7\n(3 trailing bytes)"},
	}
	ports := map[uint64]string{1: "gwtap1", 2: "gwtap2"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := formatFDB(tt.in, ports); got != tt.want {
				t.Errorf("formatFDB = %q, want %q", got, tt.want)
			}
		})
	}
}
