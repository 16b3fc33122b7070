package vmm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"godwit/migrate/secure"
	"godwit/vmm/api"
)

func TestMigrationChannel(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "psk")
	if err := os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		req  api.MigrateRequest
		mode secure.Mode
		want string // substring of the error
	}{
		{name: "none", req: api.MigrateRequest{To: "tcp:127.0.0.1:7000"}},
		{name: "psk", req: api.MigrateRequest{To: "tcp:127.0.0.1:7000", PSKFile: key}, mode: secure.ModePSK},
		{name: "relative path", req: api.MigrateRequest{To: "tcp:127.0.0.1:7000", PSKFile: "psk"}, want: `"psk_file" must be an absolute path`},
		{name: "missing file", req: api.MigrateRequest{To: "tcp:127.0.0.1:7000", PSKFile: key + ".nope"}, want: "no such file"},
		{name: "tls without key", req: api.MigrateRequest{To: "tcp:127.0.0.1:7000", TLSCert: key}, want: "together"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := migrationChannel(tt.req)
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("%v, want an error mentioning %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got secure.Mode // 0: no channel
			if cfg != nil {
				got = cfg.Mode()
			}
			if got != tt.mode {
				t.Fatalf("mode %v, want %v", got, tt.mode)
			}
		})
	}
}
