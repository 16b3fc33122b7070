package virtio

// Device is a virtio device backend (entropy, block, network...). The
// transport calls it with its own lock held, except ProcessQueue, which
// runs on the device's worker goroutine; no two calls overlap except that
// ReadConfig and WriteConfig may come from vCPU threads while the worker
// runs.
type Device interface {
	// DeviceType is the virtio device ID (§5), e.g. DeviceEntropy.
	DeviceType() uint16
	// Features are the device-type specific feature bits offered
	// (within DeviceFeatureMask); the transport adds its own.
	Features() uint64
	// NumQueues is the number of virtqueues (1 to 64).
	NumQueues() int
	// MaxQueueSize is the largest size of every queue: a power of two,
	// at most MaxQueueSize.
	MaxQueueSize() uint16
	// ConfigSize is the size of the device configuration structure
	// (§4.1.4.6), at most 4096 bytes; 0 for none.
	ConfigSize() int
	// ReadConfig fills data from offset off of the device
	// configuration; the access lies inside ConfigSize.
	ReadConfig(off uint64, data []byte)
	// WriteConfig stores data at offset off of the device
	// configuration; the access lies inside ConfigSize.
	WriteConfig(off uint64, data []byte)
	// Activate starts the device after the driver set DRIVER_OK with
	// the negotiated features. queues has NumQueues entries; queues the
	// driver did not enable have Ready() false. An error makes the
	// transport set DEVICE_NEEDS_RESET.
	Activate(features uint64, queues []*Queue, host Host) error
	// ProcessQueue handles the driver's notification of queue i. It
	// runs on the worker goroutine, takes every chain it can with Pop,
	// and returns them with PushUsed; the transport then sends the
	// used-buffer notification. An error wrapping ErrQueueBroken (or
	// any other error) stops the queue and sets DEVICE_NEEDS_RESET.
	ProcessQueue(i int) error
	// Reset returns the device to its state before Activate.
	Reset()
	// SaveConfigState encodes the device's own state (its configuration
	// and anything outside the queues); the transport saves the queues.
	SaveConfigState() ([]byte, error)
	// RestoreConfigState restores SaveConfigState output. The bytes are
	// untrusted; on error the device is unchanged.
	RestoreConfigState(data []byte) error
	// Pause quiesces device activity outside ProcessQueue (backend
	// threads). It is called after the worker stopped, and only once
	// per Resume.
	Pause()
	// Resume undoes Pause.
	Resume()
}

// Host is what an active device may ask of its transport.
type Host interface {
	// SignalQueue sends a used-buffer notification for queue i if the
	// driver wants one. Call it only from ProcessQueue (the transport
	// does so after ProcessQueue anyway).
	SignalQueue(i int)
	// SignalConfig tells the driver the device configuration changed
	// (§4.1.4.3: config_generation changes, configuration interrupt).
	SignalConfig()
	// Kick schedules ProcessQueue(i) on the worker, e.g. when a backend
	// has data for a receive queue. Safe from any goroutine.
	Kick(i int)
}

// PCIClasser may be implemented by a Device to choose its PCI class code
// (default 0xff0000, unclassified).
type PCIClasser interface {
	PCIClass() uint32
}
