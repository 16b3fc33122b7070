package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"godwit/migrate"
	"godwit/migrate/migratetest"
	"godwit/vmm/api"
)

// migFakeVM is a Controller and Migrator whose migrations are real:
// migrate.Send of a fake VM (migratetest) to migrate.Receive in this
// process, reported through GET /migrate the way vmm.VM reports them.
type migFakeVM struct {
	*ctlFakeVM
	t       *testing.T
	factory *migratetest.Factory

	mu       sync.Mutex
	started  int
	status   string
	err      string
	progress migrate.Progress
	stats    *migrate.Stats
	rounds   []migrate.RoundRecord
	done     chan struct{}
}

func newMigFakeVM(t *testing.T, f *migratetest.Factory) *migFakeVM {
	return &migFakeVM{ctlFakeVM: &ctlFakeVM{state: "running"}, t: t, factory: f, status: "none"}
}

func (m *migFakeVM) StartMigration(_ context.Context, req api.MigrateRequest) error {
	vm, err := migratetest.New(8<<20, 1)
	if err != nil {
		return err
	}
	// A guest whose dirtying falls round by round, and a policy that
	// stops only once nothing is dirty: several rounds, all shrinking.
	schedule := []int{600, 200, 50}
	vm.DirtySchedule = func(n int) int {
		if n < len(schedule) {
			return schedule[n]
		}
		return 0
	}
	src, dst := net.Pipe()
	m.mu.Lock()
	m.started++
	m.status, m.done = "active", make(chan struct{})
	done := m.done
	m.mu.Unlock()
	opts := migrate.Options{
		DowntimeTarget: 1, SwitchoverCost: 1,
		Progress: func(p migrate.Progress) { m.mu.Lock(); m.progress = p; m.mu.Unlock() },
		Trace:    func(r migrate.RoundRecord) { m.mu.Lock(); m.rounds = append(m.rounds, r); m.mu.Unlock() },
	}
	go func() {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			migrate.Receive(context.Background(), dst, m.factory.New, migrate.ReceiveOptions{})
			dst.Close()
		}()
		st, err := migrate.Send(context.Background(), src, vm, opts)
		src.Close()
		wg.Wait()
		vm.Close()
		m.mu.Lock()
		m.stats, m.status = &st, st.Status
		if err != nil {
			m.err = err.Error()
		}
		close(done)
		m.mu.Unlock()
	}()
	return nil
}

func (m *migFakeVM) MigrationStatus() api.MigrationInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	info := api.MigrationInfo{Status: m.status, Error: m.err}
	var stats any = m.stats
	if m.stats == nil {
		stats = map[string]any{"status": "active", "progress": m.progress}
	}
	info.Stats, _ = json.Marshal(stats)
	if len(m.rounds) > 0 {
		info.Rounds, _ = json.Marshal(m.rounds)
	}
	return info
}

func (m *migFakeVM) WaitMigration(ctx context.Context, d time.Duration) api.MigrationInfo {
	m.mu.Lock()
	done := m.done
	m.mu.Unlock()
	if done != nil {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
		case <-ctx.Done():
		}
	}
	return m.MigrationStatus()
}

func (m *migFakeVM) CancelMigration(context.Context) error { return nil }

// readTrace parses a trace file: every line must be a JSON object with a
// type. It returns the types in order and the lines.
func readTrace(t *testing.T, path string) ([]string, []json.RawMessage) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var types []string
	var recs []json.RawMessage
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var rec struct {
			Type *string `json:"type"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil || rec.Type == nil {
			t.Fatalf("trace line %d is not a JSON record with a type (%v):\n%s", len(types)+1, err, sc.Text())
		}
		types = append(types, *rec.Type)
		recs = append(recs, append(json.RawMessage(nil), sc.Bytes()...))
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return types, recs
}

// TestMigrateTrace runs `godwit migrate --trace` against a source whose
// migrations are real engine runs and checks the file is JSON Lines with
// the records in order — round..., stop_and_copy, summary — matching
// what the source reported, and that --json and `ctl stats` show the
// breakdown.
func TestMigrateTrace(t *testing.T) {
	m := newMigFakeVM(t, &migratetest.Factory{})
	sock := serveFake(t, m)
	trace := filepath.Join(t.TempDir(), "trace.jsonl")
	stdout, stderr, code := runGodwit(t, "migrate", "--api-sock", sock, "--to", "tcp:127.0.0.1:1", "--trace", trace, "--json")
	if code != 0 {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	types, recs := readTrace(t, trace)
	m.mu.Lock()
	stats, rounds := *m.stats, append([]migrate.RoundRecord(nil), m.rounds...)
	m.mu.Unlock()
	want := strings.Repeat("round ", stats.Rounds) + "stop_and_copy summary"
	if got := strings.Join(types, " "); got != want {
		t.Fatalf("record types %q, want %q", got, want)
	}
	if stats.Rounds < 4 {
		t.Fatalf("only %d rounds", stats.Rounds)
	}
	for i := range stats.Rounds {
		var got migrate.RoundRecord
		if err := json.Unmarshal(recs[i], &got); err != nil {
			t.Fatal(err)
		}
		if want, _ := migrate.EncodeRecord(rounds[i]); string(want) != string(recs[i])+"\n" {
			t.Fatalf("trace round %d:\n%s\nsource reported\n%s", i, recs[i], want)
		}
		if got.Round != i || (i > 0 && got.PagesSent >= rounds[i-1].PagesSent) {
			t.Fatalf("round %d did not shrink: %s", i, recs[i])
		}
	}
	// The summary is the final statistics, the breakdown included.
	var sum struct {
		Type string `json:"type"`
		migrate.Stats
	}
	if err := json.Unmarshal(recs[len(recs)-1], &sum); err != nil {
		t.Fatal(err)
	}
	gotJSON, _ := json.Marshal(sum.Stats)
	wantJSON, _ := json.Marshal(stats)
	if !bytes.Equal(gotJSON, wantJSON) {
		t.Fatalf("summary %s\nstats   %s", gotJSON, wantJSON)
	}
	if want, _ := migrate.EncodeRecord(*stats.StopAndCopy); string(want) != string(recs[len(recs)-2])+"\n" {
		t.Fatalf("stop_and_copy record\n%s\nsource reported\n%s", recs[len(recs)-2], want)
	}
	// --json prints GET /migrate's final answer: the breakdown in the
	// statistics, and the round records.
	var info struct {
		Status string                `json:"status"`
		Stats  migrate.Stats         `json:"stats"`
		Rounds []migrate.RoundRecord `json:"rounds"`
	}
	if err := json.Unmarshal([]byte(stdout), &info); err != nil {
		t.Fatalf("--json output: %v\n%s", err, stdout)
	}
	if info.Status != "completed" || info.Stats.StopAndCopy == nil || len(info.Rounds) != stats.Rounds {
		t.Fatalf("--json output %s", stdout)
	}

	out, err, _ := runCtl(t, "--api-sock", sock, "stats")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"migration:    completed\n", "stop-and-copy: pause ", "ack round trip ", "decision\n", "  continue\n", "  stop-and-copy\n", "(paused)\n"} {
		if !strings.Contains(out, w) {
			t.Errorf("ctl stats output lacks %q:\n%s", w, out)
		}
	}
	out, err, _ = runCtl(t, "--api-sock", sock, "stats", "--json")
	if err != nil || !strings.Contains(out, `"stop_and_copy": {`) || !strings.Contains(out, `"rounds": [`) {
		t.Errorf("ctl stats --json: %v\n%s", err, out)
	}
}

// TestMigrateTraceFailure checks the trace of a migration the
// destination refuses (no round, no breakdown: only the summary, failed)
// and that a trace file that cannot be created starts nothing.
func TestMigrateTraceFailure(t *testing.T) {
	m := newMigFakeVM(t, &migratetest.Factory{MaxMemory: 4 << 20})
	sock := serveFake(t, m)
	trace := filepath.Join(t.TempDir(), "trace.jsonl")
	_, stderr, code := runGodwit(t, "migrate", "--api-sock", sock, "--to", "tcp:127.0.0.1:1", "--trace", trace)
	if code != 1 || !strings.Contains(stderr, "migration failed") {
		t.Fatalf("exit %d, stderr %s", code, stderr)
	}
	types, recs := readTrace(t, trace)
	var sum migrate.Stats
	if strings.Join(types, " ") != "summary" || json.Unmarshal(recs[0], &sum) != nil ||
		sum.Status != migrate.StatusFailed || !strings.Contains(sum.Error, "this host allows 4 MiB") {
		t.Fatalf("trace %s", recs)
	}

	_, stderr, code = runGodwit(t, "migrate", "--api-sock", sock, "--to", "tcp:127.0.0.1:1", "--trace", filepath.Join(t.TempDir(), "no", "such", "dir"))
	if code != 1 || !strings.Contains(stderr, "--trace: ") {
		t.Fatalf("exit %d, stderr %s", code, stderr)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.started != 1 {
		t.Fatalf("%d migrations started, want 1", m.started)
	}
}

// pollFake is a Migrator whose migration the test ends by hand; it
// counts the GET /migrate long-polls waiting at the server.
type pollFake struct {
	*ctlFakeVM
	mu      sync.Mutex
	cond    *sync.Cond
	waiting int
	status  string
	done    chan struct{}
}

func (p *pollFake) StartMigration(context.Context, api.MigrateRequest) error { return nil }
func (p *pollFake) CancelMigration(context.Context) error                    { return nil }

func (p *pollFake) MigrationStatus() api.MigrationInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	return api.MigrationInfo{Status: p.status, Stats: json.RawMessage(`{"status":"` + p.status + `"}`)}
}

func (p *pollFake) WaitMigration(ctx context.Context, d time.Duration) api.MigrationInfo {
	p.mu.Lock()
	p.waiting++
	p.cond.Broadcast()
	p.mu.Unlock()
	t := time.NewTimer(d)
	select {
	case <-p.done:
	case <-t.C:
	case <-ctx.Done():
	}
	t.Stop()
	p.mu.Lock()
	p.waiting--
	p.mu.Unlock()
	return p.MigrationStatus()
}

// TestFollowMigrationOverlapsPolls checks that followMigration keeps two
// long-polls waiting at the server, so one of them is there to receive
// the final status when the migration ends, and that it returns that
// final status.
func TestFollowMigrationOverlapsPolls(t *testing.T) {
	p := &pollFake{ctlFakeVM: &ctlFakeVM{state: "running"}, status: "active", done: make(chan struct{})}
	p.cond = sync.NewCond(&p.mu)
	sock := serveFake(t, p)
	type result struct {
		info api.MigrationInfo
		err  error
	}
	res := make(chan result, 1)
	go func() {
		info, err := followMigration(context.Background(), api.NewClient(sock), func(api.MigrationInfo) {})
		res <- result{info, err}
	}()
	p.mu.Lock()
	for p.waiting < 2 {
		p.cond.Wait()
	}
	p.status = "completed"
	close(p.done)
	p.mu.Unlock()
	r := <-res
	if r.err != nil || r.info.Status != "completed" {
		t.Fatalf("followMigration = %+v, %v", r.info, r.err)
	}
}
