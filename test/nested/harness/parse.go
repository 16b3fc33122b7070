package harness

import (
	"bufio"
	"regexp"
	"strings"
)

var kernelDepRE = regexp.MustCompile(`(?m)^\s*Depends:\s*(linux-image-[0-9][^\s,(]*)(?:\s*\(=\s*([^\s)]+)\))?`)

// ParseKernelPackage extracts the versioned kernel package that
// linux-image-amd64 depends on, from the output of `apt-cache show
// linux-image-amd64` ("Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)")
// or `apt-cache depends linux-image-amd64` ("  Depends: linux-image-...").
// version is empty when the dependency is not pinned to one version.
func ParseKernelPackage(out string) (pkg, version string, ok bool) {
	m := kernelDepRE.FindStringSubmatch(out)
	if m == nil {
		return "", "", false
	}
	return m[1], m[2], true
}

// ParseAptVersion returns the first "Version:" field of `apt-cache show`.
func ParseAptVersion(out string) (string, bool) {
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Version:"); ok {
			if v = strings.TrimSpace(v); v != "" {
				return v, true
			}
		}
	}
	return "", false
}

// ParseLdd returns the absolute paths of the shared objects listed by ldd,
// the dynamic loader included; the vDSO and unresolved names are skipped.
func ParseLdd(out string) []string {
	var paths []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			paths = append(paths, f[2])
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			paths = append(paths, f[0])
		}
	}
	return paths
}
