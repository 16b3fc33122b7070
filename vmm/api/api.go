// Package api is godwit's control API: HTTP/1.1 with JSON bodies on a unix
// socket owned by the VMM process.
//
// The VMM implements [Controller]; [Server] exposes it on a socket and
// [Client] talks to it (the `godwit ctl` command uses the client). The
// routes are documented in docs/api.yaml:
//
//	GET /vm               -> 200 VMInfo
//	PUT /vm/pause         -> 200 {"state": ...}
//	PUT /vm/resume        -> 200 {"state": ...}
//	PUT /vm/shutdown      -> 200 {"state": ...}
//	PUT /vm/dump-memory   {"path": "/abs/file", "gpa": 0, "len": 0} -> 200 {"path": ..., "bytes": n}
//
// Every error is a JSON object {"error": "..."} with a meaningful status:
// 400 for malformed JSON or invalid fields, 404 for an unknown path, 405
// (with an Allow header) for a wrong method, 409 when the VM is in the wrong
// state for the request, 413 for a body over [MaxBodyBytes], 500 otherwise.
//
// Everything read from the socket is treated as hostile: request bodies are
// bounded, JSON is decoded strictly (unknown fields and trailing data are
// rejected) and fields are validated before the Controller sees them.
package api

import (
	"context"
	"errors"
)

// Controller is what the API server needs of a VM.
type Controller interface {
	// Info reports the VM's state, configuration, uptime and exit counters.
	Info() VMInfo
	// Pause stops the vCPUs and quiesces the devices.
	Pause(ctx context.Context) error
	// Resume restarts a paused VM.
	Resume(ctx context.Context) error
	// Shutdown stops the VM.
	Shutdown(ctx context.Context) error
	// DumpMemory writes guest RAM from guest-physical address gpa to the
	// file at path on the VMM's host. length 0 means to the end of RAM.
	DumpMemory(ctx context.Context, path string, gpa, length uint64) error
}

// VMInfo is the body of GET /vm.
type VMInfo struct {
	// State is one of "created", "running", "paused", "shutting-down",
	// "stopped".
	State string `json:"state"`
	// Config is the configuration the VM was started with.
	Config VMConfig `json:"config"`
	// UptimeMS is the time since the VM started, in milliseconds.
	UptimeMS int64 `json:"uptime_ms"`
	// Exits counts VM exits by reason ("io", "mmio", "hlt", ...) plus
	// VMM-side counters such as "unhandled_pio_reads".
	Exits map[string]uint64 `json:"exits"`
	// DirtyLog reports whether KVM dirty logging is on for guest RAM:
	// only while a migration sends the VM; its end, failed, cancelled or
	// completed, turns it off.
	DirtyLog bool `json:"dirty_log"`
	// Devices describes each PCI device for diagnostics: its virtio
	// transport, queues (indices and ring fields), MSI-X and counters.
	Devices []DeviceInfo `json:"devices,omitempty"`
	// MSIRoutes counts the MSI messages delivered through irqfds.
	MSIRoutes int `json:"msi_routes"`
}

// DeviceInfo describes one PCI device in VMInfo.
type DeviceInfo struct {
	// Name is the device's name (e.g. "net0").
	Name string `json:"name"`
	// Slot is its PCI slot.
	Slot int `json:"slot"`
	// Virtio is the transport's diagnostic snapshot (the JSON of
	// virtio.TransportInfo).
	Virtio any `json:"virtio"`
}

// VMConfig is the configuration of a VM as reported by the API.
type VMConfig struct {
	// MemoryBytes is the guest RAM size.
	MemoryBytes uint64 `json:"memory_bytes"`
	// CPUs is the number of vCPUs.
	CPUs int `json:"cpus"`
	// Kernel is the path of the Linux kernel image, if any.
	Kernel string `json:"kernel,omitempty"`
	// Initrd is the path of the initial ramdisk, if any.
	Initrd string `json:"initrd,omitempty"`
	// Cmdline is the kernel command line, if any.
	Cmdline string `json:"cmdline,omitempty"`
	// BootSector is the path of a boot-sector image, if any.
	BootSector string `json:"boot_sector,omitempty"`
	// Guest is the guest kind: "linux", "boot-sector" or "test-guest".
	Guest string `json:"guest"`
	// GuestArgs are guest-specific parameters (for the test guest).
	GuestArgs map[string]string `json:"guest_args,omitempty"`
	// Serial describes where the serial console goes.
	Serial string `json:"serial"`
}

// Errors a Controller returns (possibly wrapped with %w) that the server
// maps to status codes.
var (
	// ErrInvalidState means the VM is in the wrong state for the request,
	// for example pausing a stopped VM. It maps to 409 Conflict.
	ErrInvalidState = errors.New("invalid VM state for this request")
	// ErrBadRequest means the request's parameters are unacceptable, for
	// example a dump range outside guest RAM. Wrap it with
	// fmt.Errorf("%w: ...", ErrBadRequest). It maps to 400 Bad Request.
	ErrBadRequest = errors.New("bad request")
)

// MaxBodyBytes bounds every request body the server reads.
const MaxBodyBytes = 64 << 10

// DumpRequest is the body of PUT /vm/dump-memory.
type DumpRequest struct {
	// Path is an absolute path on the VMM's host to write the dump to.
	Path string `json:"path"`
	// GPA is the guest-physical address the dump starts at.
	GPA uint64 `json:"gpa"`
	// Len is the number of bytes to dump; 0 means to the end of RAM.
	Len uint64 `json:"len"`
}

// DumpResponse is the body of a successful PUT /vm/dump-memory.
type DumpResponse struct {
	// Path is the file the dump was written to.
	Path string `json:"path"`
	// Bytes is the number of bytes written.
	Bytes uint64 `json:"bytes"`
}

// StateResponse is the body of a successful pause, resume or shutdown.
type StateResponse struct {
	// State is the VM's state after the request.
	State string `json:"state"`
}

// ErrorResponse is the body of every error response.
type ErrorResponse struct {
	// Error is a human-readable message.
	Error string `json:"error"`
}
