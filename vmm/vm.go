package vmm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"godwit/devices"
	"godwit/devices/pci"
	"godwit/migrate/storage"
	"godwit/test/guest"
	"godwit/vmm/api"
	"godwit/vmm/boot"
	"godwit/vmm/kvm"
	"godwit/vmm/memory"
)

// Addresses KVM needs inside the 32-bit MMIO hole on Intel hosts (the TSS
// takes three pages, the EPT identity map one page below it).
const (
	tssAddr         = 0xfffbd000
	identityMapAddr = 0xfffbc000
)

// ISA interrupt lines used by the legacy devices.
const (
	i8042IRQ = 1
	com1IRQ  = 4
)

// StopReason says why a VM stopped.
type StopReason struct {
	// Clean is true for a guest reboot or power-off request or a shutdown
	// through the API; false for a fault.
	Clean bool
	// What describes the cause, for the log.
	What string
	// Err is the fault, when there is one.
	Err error
}

// VM is a running or runnable virtual machine.
type VM struct {
	cfg   Config
	log   *slog.Logger
	sys   *kvm.System
	vm    *kvm.VM
	mem   *memory.Memory
	vcpus []*vcpu

	pio, mmio *devices.Bus
	serial    *devices.Serial
	pci       *pci.Bus     // nil without PCI devices (pci.go)
	pciDevs   []*pciDevice // in bus order
	notify    *notifiers   // queue notification ioeventfds; nil without PCI devices
	msi       *msiRoutes   // MSI delivery (irqfds); nil without PCI devices or before the KVM VM exists
	console   *console
	api       *api.Server

	entry      boot.Entry
	guestParam *guest.Params // set for the embedded test guest

	runMu       sync.Mutex
	runCond     *sync.Cond
	state       string // see api.VMInfo.State
	paused      bool   // vCPUs are asked to park
	throttled   bool   // vCPUs park for the current throttle slice
	throttlePct int    // auto-converge throttle, 0 = off
	throttling  bool   // the throttle goroutine runs
	parked      int    // vCPUs parked
	exited      int    // vCPU loops that returned
	stopped     chan struct{}
	stop        StopReason
	stopOne     sync.Once
	started     time.Time

	exits  exitCounters
	out    outgoing
	msrs   []uint32         // the MSRs that migrate, probed on the first SaveState
	images []*storage.Image // an incoming storage migration's images (storagemig.go)
}

type exitCounters struct {
	io, mmio, hlt, intr, other atomic.Uint64
}

// New creates a VM from cfg: guest RAM, the in-kernel interrupt controllers,
// the devices, the vCPUs and the loaded guest. Nothing runs until Run.
func New(cfg Config) (*VM, error) { return newVM(cfg, nil) }

// newVM creates a VM. With incoming set, the VM will receive a migrated
// embedded test guest with those parameters; with incoming nil and
// cfg.Incoming set, another migrated guest; either way no guest is loaded.
func newVM(cfg Config, incoming *guest.Params) (vm *VM, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// Network devices without a MAC get a random one now: the VM keeps
	// it, and a migration carries it to the destination.
	cfg.Nets = withMACs(cfg.Nets)
	v := &VM{cfg: cfg, log: cfg.Log, state: "created", stopped: make(chan struct{}), guestParam: incoming}
	if v.log == nil {
		v.log = slog.Default()
	}
	v.runCond = sync.NewCond(&v.runMu)
	defer func() {
		if err != nil {
			v.Close()
		}
	}()
	// Everything that can be checked without KVM comes first, so bad boot
	// inputs are reported the same way on every host.
	if v.mem, err = memory.New(cfg.MemoryBytes); err != nil {
		return nil, err
	}
	if cfg.MemPrealloc {
		if err := v.mem.Prealloc(); err != nil {
			return nil, err
		}
	}
	// The PCI bus comes before the guest: the MP table lists its routes.
	if err := v.setupPCI(); err != nil {
		return nil, err
	}
	if !cfg.Incoming {
		if err := v.loadGuest(); err != nil {
			return nil, err
		}
	}
	if err := v.setupDevices(); err != nil {
		return nil, err
	}
	if v.sys, err = kvm.Open(); err != nil {
		return nil, err
	}
	if v.vm, err = v.sys.CreateVM(); err != nil {
		return nil, fmt.Errorf("creating VM: %w", err)
	}
	if err := v.vm.SetTSSAddr(tssAddr); err != nil {
		return nil, fmt.Errorf("setting TSS address: %w", err)
	}
	if err := v.vm.SetIdentityMapAddr(identityMapAddr); err != nil {
		return nil, fmt.Errorf("setting identity map address: %w", err)
	}
	if err := v.vm.CreateIRQChip(); err != nil {
		return nil, fmt.Errorf("creating in-kernel irqchip: %w", err)
	}
	if err := v.vm.CreatePIT2(kvm.PITSpeakerDummy); err != nil {
		return nil, fmt.Errorf("creating in-kernel PIT: %w", err)
	}
	// After this, BAR changes (the guest's, or a migration restore's)
	// move the registrations.
	// MSI routes first: the notification readers attachNotifiers starts
	// lead to device workers that signal MSIs.
	v.attachMSIRoutes()
	v.attachNotifiers()
	for i, r := range v.mem.Regions() {
		if err := v.vm.SetUserMemoryRegion(kvm.UserspaceMemoryRegion{
			Slot:          r.Slot,
			GuestPhysAddr: r.GPA,
			MemorySize:    r.Size,
			UserspaceAddr: uint64(v.mem.RegionHostAddr(i)),
		}); err != nil {
			return nil, fmt.Errorf("registering guest RAM slot %d: %w", r.Slot, err)
		}
	}
	if err := v.createVCPUs(); err != nil {
		return nil, err
	}
	if cfg.Incoming {
		// The control socket is bound now, before the migration's
		// pause, so that Start only has to serve it; a socket that
		// cannot be bound refuses the migration before anything moved.
		if cfg.APISocket != "" {
			v.api = api.NewServer(v, v.log)
			if err := v.api.Listen(cfg.APISocket); err != nil {
				return nil, fmt.Errorf("control API: %w", err)
			}
		}
		return v, nil
	}
	if v.guestParam != nil {
		// The test guest's rate limit needs the TSC frequency, known
		// only once a vCPU exists.
		if khz, err := v.vcpus[0].kvm.GetTSCKHz(); err == nil {
			v.guestParam.TSCKHz = uint64(khz)
		}
		if err := v.guestParam.Validate(v.mem.Size()); err != nil {
			return nil, fmt.Errorf("test guest parameters: %w", err)
		}
		if err := v.mem.Write(guest.ParamAddr, v.guestParam.Encode()); err != nil {
			return nil, fmt.Errorf("writing test guest parameters: %w", err)
		}
	}
	if err := v.vcpus[0].setBootState(v.entry); err != nil {
		return nil, err
	}
	return v, nil
}

// setupDevices creates the buses and the legacy PC devices.
func (v *VM) setupDevices() error {
	v.pio = devices.NewBus("pio")
	v.mmio = devices.NewBus("mmio")
	out, err := openConsole(v.cfg.Serial)
	if err != nil {
		return err
	}
	v.console = out
	v.serial = devices.NewSerial(out.w, irqLine{vm: v, irq: com1IRQ})
	lowEnd := v.mem.Regions()[0].End()
	var high uint64
	if rs := v.mem.Regions(); len(rs) > 1 {
		high = rs[1].Size
	}
	reset := func() { v.requestStop(StopReason{Clean: true, What: "guest requested a reset"}) }
	for _, d := range []struct {
		base, size uint64
		name       string
		dev        devices.Device
	}{
		{0x3f8, 8, "serial-com1", v.serial},
		{0x70, 2, "cmos", devices.NewCMOS(time.Now, lowEnd, high)},
		{0x80, 1, "post", devices.NewSink("post")},
		{0x92, 1, "port92", devices.NewPort92(reset)},
	} {
		if err := v.pio.Register(d.base, d.size, d.name, d.dev); err != nil {
			return err
		}
	}
	kbd := devices.NewI8042(reset)
	kbd.SetIRQ(irqLine{vm: v, irq: i8042IRQ})
	if err := v.pio.Register(0x60, 1, "i8042-data", kbd.DataPort()); err != nil {
		return err
	}
	if err := v.pio.Register(0x64, 1, "i8042-command", kbd.CommandPort()); err != nil {
		return err
	}
	if err := v.setupACPIPM(); err != nil {
		return err
	}
	return v.registerPCI()
}

// loadGuest writes the guest (kernel, boot sector or test guest) into RAM.
func (v *VM) loadGuest() error {
	var err error
	switch v.cfg.GuestKind() {
	case "linux":
		kernel, rerr := readInput("kernel", v.cfg.Kernel)
		if rerr != nil {
			return rerr
		}
		var initrd []byte
		if v.cfg.Initrd != "" {
			if initrd, rerr = readInput("initrd", v.cfg.Initrd); rerr != nil {
				return rerr
			}
		}
		if err = boot.WriteMPConfig(v.mem, v.mpConfig()); err != nil {
			return err
		}
		if v.cfg.ACPI {
			if err = boot.WriteACPI(v.mem, v.acpiConfig()); err != nil {
				return err
			}
		}
		cmdline := v.cfg.Cmdline
		if cmdline == "" {
			cmdline = DefaultCmdline
		}
		v.entry, err = boot.LoadLinux(v.mem, kernel, initrd, cmdline)
	case "boot-sector":
		img, rerr := readInput("boot sector", v.cfg.BootSector)
		if rerr != nil {
			return rerr
		}
		v.entry, err = boot.LoadBootSector(v.mem, img)
	default:
		err = v.loadTestGuest()
	}
	return err
}

// loadTestGuest loads the embedded test guest with its parameter block.
func (v *VM) loadTestGuest() error {
	p := guest.DefaultParams(v.mem.Regions()[0].End())
	for _, a := range v.cfg.GuestArgs {
		key, val, _ := cutEq(a)
		if err := guest.ParseParam(&p, key, val); err != nil {
			return fmt.Errorf("--guest-arg %s: %w", a, err)
		}
	}
	// The TSC frequency a rate limit needs is known once a vCPU exists
	// (New fills it in and validates again); check the rest now.
	check := p
	if check.MaxPagesPerSec > 0 && check.TSCKHz == 0 {
		check.TSCKHz = 1
	}
	if err := check.Validate(v.mem.Size()); err != nil {
		return fmt.Errorf("test guest parameters: %w", err)
	}
	if err := v.mem.Write(guest.ParamAddr, p.Encode()); err != nil {
		return fmt.Errorf("writing test guest parameters: %w", err)
	}
	entry, err := boot.LoadFlat64(v.mem, guest.Binary, guest.LoadAddr, guest.StackTop, guest.ParamAddr)
	if err != nil {
		return err
	}
	v.entry = entry
	v.guestParam = &p
	return nil
}

// TestGuestParams returns the embedded test guest's parameters, or nil when
// the VM runs another guest.
func (v *VM) TestGuestParams() *guest.Params { return v.guestParam }

// readInput reads a boot input file with a clear error.
func readInput(what, path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("%s %s: file is empty", what, path)
	}
	return b, nil
}

// Run starts the VM and blocks until it stops; it returns why it stopped.
// Cancelling ctx stops the VM.
func (v *VM) Run(ctx context.Context) StopReason {
	if err := v.start(); err != nil {
		return StopReason{What: "starting the VM", Err: err}
	}
	return v.Wait(ctx)
}

// start opens the control API (before any vCPU runs, so a client that
// sees guest output can always reach it) and starts the vCPU threads.
func (v *VM) start() error {
	v.runMu.Lock()
	if v.state != "created" {
		v.runMu.Unlock()
		return fmt.Errorf("%w: the VM is %s, not created", api.ErrInvalidState, v.state)
	}
	v.state = "starting"
	v.runMu.Unlock()
	if v.cfg.APISocket != "" {
		bound := v.api != nil // an incoming VM's (see newVM)
		if !bound {
			v.api = api.NewServer(v, v.log)
		}
		serveErr := make(chan error, 1)
		go func() { serveErr <- v.api.Serve(v.cfg.APISocket) }()
		ready := v.api.Ready()
		if bound {
			// Serve cannot fail to listen: do not wait for it.
			ready = closedChan
		}
		select {
		case <-ready:
			go func() {
				if err := <-serveErr; err != nil {
					v.requestStop(StopReason{What: "control API failed", Err: err})
				}
			}()
		case err := <-serveErr:
			v.runMu.Lock()
			v.state = "stopped"
			v.runMu.Unlock()
			return fmt.Errorf("control API: %w", err)
		}
	}
	v.runMu.Lock()
	v.state = "running"
	v.started = time.Now()
	v.runMu.Unlock()
	if v.console != nil && v.console.in != nil {
		in := v.console.in
		if v.console.restore != nil { // a raw terminal: Ctrl-A x quits
			in = newEscapeReader(in, func() {
				v.requestStop(StopReason{Clean: true, What: "quit from the console (Ctrl-A x)"})
			})
		}
		go v.serial.PumpInput(in)
	}
	for _, c := range v.vcpus {
		go c.loop()
	}
	return nil
}

// closedChan is a closed channel: a wait on it returns at once.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Wait blocks until the started VM stops, or stops it when ctx is
// cancelled, and returns why it stopped.
func (v *VM) Wait(ctx context.Context) StopReason {
	select {
	case <-ctx.Done():
		v.requestStop(StopReason{Clean: true, What: "stopped: " + ctx.Err().Error()})
	case <-v.stopped:
	}
	v.waitVCPUsExited()
	v.runMu.Lock()
	v.state = "stopped"
	v.runMu.Unlock()
	if v.api != nil {
		v.api.Close()
	}
	return v.stop
}

// Stop stops the VM with the given reason (the first reason wins).
func (v *VM) Stop(r StopReason) { v.requestStop(r) }

// requestStop records the first stop reason and makes every vCPU leave its loop.
func (v *VM) requestStop(r StopReason) {
	v.stopOne.Do(func() {
		v.runMu.Lock()
		v.stop = r
		v.state = "shutting-down"
		v.runMu.Unlock()
		close(v.stopped)
		v.kickAll()
	})
}

// Close releases every host resource of the VM. It is safe on a partly
// created VM.
func (v *VM) Close() error {
	if v.api != nil {
		v.api.Close()
	}
	errs := []error{v.closeDevices()}
	for _, c := range v.vcpus {
		errs = append(errs, c.kvm.Close())
	}
	if v.vm != nil {
		errs = append(errs, v.vm.Close())
	}
	if v.mem != nil {
		errs = append(errs, v.mem.Close())
	}
	if v.sys != nil {
		errs = append(errs, v.sys.Close())
	}
	if v.console != nil {
		errs = append(errs, v.console.Close())
	}
	return errors.Join(errs...)
}

// Memory returns the VM's guest RAM.
func (v *VM) Memory() *memory.Memory { return v.mem }

// irqLine drives one ISA interrupt line of the in-kernel irqchip.
type irqLine struct {
	vm  *VM
	irq uint32
}

// SetLevel implements devices.IRQLine.
func (l irqLine) SetLevel(high bool) {
	if l.vm.vm == nil {
		return // no irqchip yet: devices built without KVM (tests)
	}
	if err := l.vm.vm.IRQLine(l.irq, high); err != nil {
		l.vm.log.Warn("irq line", "irq", l.irq, "err", err)
	}
}

var _ io.Closer = (*VM)(nil)
