package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Disk layout of the virtio-blk tests: the guest writes 1 MiB of random
// bytes at offset 1 MiB of vda (blkPatternOff, blkPatternLen) and reads
// it back; vdb is read-only and holds a pattern the host wrote.
const (
	blkVdaSize     = 8 << 20
	blkVdbSize     = 4 << 20
	blkPatternOff  = 1 << 20
	blkPatternLen  = 1 << 20
	blkTickSector0 = 4096 // the migration test writes tick i at sector 4096+i
)

// blkImages creates vda (zeros) and vdb (a pattern) in dir.
func blkImages(t *testing.T, dir string) (vda, vdb string, vdbData []byte) {
	t.Helper()
	vda = filepath.Join(dir, "vda.img")
	vdb = filepath.Join(dir, "vdb.img")
	if err := os.WriteFile(vda, make([]byte, blkVdaSize), 0o644); err != nil {
		t.Fatal(err)
	}
	vdbData = make([]byte, blkVdbSize)
	for i := range vdbData {
		vdbData[i] = byte(i/512) ^ byte(i*31)
	}
	if err := os.WriteFile(vdb, vdbData, 0o644); err != nil {
		t.Fatal(err)
	}
	return vda, vdb, vdbData
}

func blkSHA(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// blkField returns the text after prefix in line, if line starts with it.
func blkField(line, prefix string) (string, bool) {
	if !strings.HasPrefix(line, prefix) {
		return "", false
	}
	return strings.TrimSpace(strings.TrimPrefix(line, prefix)), true
}
