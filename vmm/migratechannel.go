package vmm

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"

	"godwit/migrate/secure"
	"godwit/vmm/api"
)

// migrationChannel loads the credentials of the authenticated channel a
// migrate request names (package migrate/secure), or returns nil when it
// names none. The files must be absolute paths: this process reads them,
// and its working directory is not the client's. A TLS request without a
// peer name verifies the destination's certificate against the host of
// To.
func migrationChannel(req api.MigrateRequest) (*secure.Config, error) {
	f := secure.Files{PSKFile: req.PSKFile, CertFile: req.TLSCert, KeyFile: req.TLSKey, CAFile: req.TLSCA, PeerName: req.TLSPeerName}
	for _, p := range []struct{ field, path string }{
		{"psk_file", f.PSKFile}, {"tls_cert", f.CertFile}, {"tls_key", f.KeyFile}, {"tls_ca", f.CAFile},
	} {
		if p.path != "" && !filepath.IsAbs(p.path) {
			return nil, fmt.Errorf("%q must be an absolute path, got %q", p.field, p.path)
		}
	}
	cfg, err := f.Load()
	if err != nil || cfg == nil {
		return nil, err
	}
	if cfg.Mode() == secure.ModeTLS && cfg.PeerName == "" {
		host, _, err := net.SplitHostPort(strings.TrimPrefix(req.To, "tcp:"))
		if err != nil {
			return nil, fmt.Errorf("destination %q: %v", req.To, err)
		}
		cfg.PeerName = host
	}
	return cfg, nil
}

// channelName names a channel for logs.
func channelName(cfg *secure.Config) string {
	if cfg == nil {
		return "plain"
	}
	return cfg.Mode().String()
}
