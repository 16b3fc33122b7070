package pci

import "godwit/devices"

// Host bridge identity: an Intel host bridge ID, as kvmtool and
// Firecracker present, class 06/00/00 (host bridge).
const (
	HostBridgeVendor = 0x8086
	HostBridgeDevice = 0x0d57
	classHostBridge  = 0x060000
)

// HostBridge is the host bridge at 00:00.0: an identity in configuration
// space and nothing else (no BARs, no interrupt).
type HostBridge struct{ cs *ConfigSpace }

// NewHostBridge returns a host bridge function.
func NewHostBridge() (*HostBridge, error) {
	cs, err := NewConfigSpace(Header{
		VendorID: HostBridgeVendor,
		DeviceID: HostBridgeDevice,
		Class:    classHostBridge,
	})
	if err != nil {
		return nil, err
	}
	return &HostBridge{cs: cs}, nil
}

// Config implements Function.
func (h *HostBridge) Config() *ConfigSpace { return h.cs }

// ReadBAR implements Function; the host bridge has no BARs.
func (h *HostBridge) ReadBAR(_ int, _ uint64, data []byte) { devices.FillOnes(data) }

// WriteBAR implements Function; the host bridge has no BARs.
func (h *HostBridge) WriteBAR(int, uint64, []byte) {}
