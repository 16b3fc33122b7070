package runner

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"godwit/bench"
	"godwit/bench/qmp"
	"godwit/test/guest"
)

func TestNew(t *testing.T) {
	dir := t.TempDir()
	r, err := New(Config{Godwit: "/bin/true", Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if r.cfg.Guest != GuestTest || r.cfg.QEMU != DefaultQEMU || r.cfg.QEMUCPU != DefaultQEMUCPU || r.cfg.QEMUMachine != DefaultQEMUMachine ||
		r.cfg.StepTimeout <= 0 || r.cfg.MigrateTimeout <= 0 || r.cfg.ToRetry <= 0 || r.cfg.Log == nil {
		t.Errorf("defaults not filled in: %+v", r.cfg)
	}
	for _, cfg := range []Config{
		{Dir: dir},
		{Godwit: "/bin/true"},
		{Godwit: "/bin/true", Dir: dir, Guest: "windows"},
		{Godwit: "/bin/true", Dir: filepath.Join(dir, "a,b")},
		{Godwit: "/bin/true", Dir: filepath.Join(dir, "a=b")},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

func TestListenAddr(t *testing.T) {
	for line, want := range map[string]string{
		`time=... level=INFO msg="waiting for a migrating VM" listen=tcp:127.0.0.1:40123 channel=plain`: "tcp:127.0.0.1:40123",
		`msg="waiting" listen="tcp:[::1]:7000"`:                                                         "tcp:[::1]:7000",
		`msg="waiting" listen=unix:/x`:                                                                  "",
		`no address here`:                                                                               "",
		`listen=`:                                                                                       "",
	} {
		if got := listenAddr(line); got != want {
			t.Errorf("listenAddr(%q) = %q, want %q", line, got, want)
		}
	}
}

func TestGuestArgs(t *testing.T) {
	p := bench.Point{ID: 1, MemBytes: 64 << 20, DirtyRate: 2000, WorkingSet: 8 << 20, DowntimeMs: 100}
	dir := t.TempDir()
	r, _ := New(Config{Godwit: "/bin/true", Dir: dir})
	args, err := r.guestArgs(dir, p)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"run", "--mem", "67108864", "--cpus", "1", "--guest-arg", "range-start=0x200000", "--guest-arg", "range-end=0xa00000",
		"--guest-arg", "heartbeat=1", "--guest-arg", "rate=2000"}
	if !slices.Equal(args, want) {
		t.Errorf("flat guest args %q, want %q", args, want)
	}
	// The flags parse back to the point's parameters.
	gp := guest.DefaultParams(p.MemBytes)
	for i := 5; i < len(args); i += 2 {
		if err := guest.ParseArg(&gp, args[i+1]); err != nil {
			t.Fatal(err)
		}
	}
	if gp != p.GuestParams() {
		t.Errorf("flags mean %+v, want %+v", gp, p.GuestParams())
	}

	r.cfg.Guest = GuestBootSector
	args, err = r.guestArgs(dir, p)
	if err != nil {
		t.Fatal(err)
	}
	if len(args) != 7 || args[5] != "--boot-sector" {
		t.Fatalf("boot-sector args %q", args)
	}
	img, err := os.ReadFile(args[6])
	if err != nil {
		t.Fatal(err)
	}
	if got, err := guest.BootImageParams(img); err != nil || got != p.GuestParams() {
		t.Errorf("boot image parameters %+v (%v), want %+v", got, err, p.GuestParams())
	}

	big := bench.Point{MemBytes: 64 << 20, WorkingSet: 64 << 20}
	for _, g := range []string{GuestTest, GuestBootSector} {
		r.cfg.Guest = g
		if _, err := r.guestArgs(dir, big); err == nil {
			t.Errorf("%s: a working set beyond RAM was accepted", g)
		}
	}
}

func TestQEMUArgs(t *testing.T) {
	r, _ := New(Config{Godwit: "/bin/true", Dir: t.TempDir(), QEMUCPU: "host,-arch-capabilities"})
	args := strings.Join(r.qemuArgs(bench.Point{MemBytes: 64 << 20}, "/d/disk.img"), " ")
	for _, want := range []string{"qemu-system-x86_64 ", "-machine pc", "-accel kvm", "-cpu host,-arch-capabilities", "-m 65536K", "-smp 1",
		"-nodefaults", "-serial stdio", "-drive file=/d/disk.img,format=raw,if=ide"} {
		if !strings.Contains(args, want) {
			t.Errorf("QEMU arguments %q lack %q", args, want)
		}
	}
	p := QEMUParameters(30)
	if p["downtime-limit"] != int64(30) || p["max-bandwidth"] != int64(QEMUMaxBandwidth) {
		t.Errorf("QEMUParameters = %v", p)
	}
}

// TestQueryFinished: QEMU announces a completed migration before it has
// its times; the runner reads again until they are there.
func TestQueryFinished(t *testing.T) {
	cc, sc := net.Pipe()
	defer sc.Close()
	queries := 0
	go func() {
		w := func(m any) {
			b, _ := json.Marshal(m)
			sc.Write(append(b, '\n'))
		}
		w(map[string]any{"QMP": map[string]any{}})
		dec := json.NewDecoder(bufio.NewReader(sc))
		for {
			var c struct {
				Execute string          `json:"execute"`
				ID      json.RawMessage `json:"id"`
			}
			if dec.Decode(&c) != nil {
				return
			}
			ret := map[string]any{}
			if c.Execute == "query-migrate" {
				queries++
				ret = map[string]any{"status": "completed", "total-time": 0, "downtime": 0}
				if queries >= 3 {
					ret = map[string]any{"status": "completed", "total-time": 120, "downtime": 9, "ram": map[string]any{"transferred": 5}}
				}
			}
			w(map[string]any{"return": ret, "id": c.ID})
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := qmp.NewClient(ctx, cc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	info, raw, err := queryFinished(ctx, c, qmp.StatusCompleted)
	if err != nil {
		t.Fatal(err)
	}
	if info.TotalTime != 120 || info.Downtime != 9 || queries != 3 || !strings.Contains(string(raw), `"total-time":120`) {
		t.Errorf("got %+v after %d queries (%s)", info, queries, raw)
	}
	// A failed migration is read once, whatever its times.
	queries = 0
	if _, _, err := queryFinished(ctx, c, qmp.StatusFailed); err != nil || queries != 1 {
		t.Errorf("failed migration: %v after %d queries", err, queries)
	}
}
