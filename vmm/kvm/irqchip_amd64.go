package kvm

import "fmt"

// In-kernel irqchip IDs for GetIRQChip/SetIRQChip (KVM_IRQCHIP_*).
const (
	IRQChipPICMaster = 0 // KVM_IRQCHIP_PIC_MASTER
	IRQChipPICSlave  = 1 // KVM_IRQCHIP_PIC_SLAVE
	IRQChipIOAPIC    = 2 // KVM_IRQCHIP_IOAPIC
)

// IRQChip mirrors struct kvm_irqchip: the state of one in-kernel interrupt
// controller. Chip holds the union: struct kvm_pic_state for the PICs,
// struct kvm_ioapic_state for the IOAPIC; it is saved and restored as
// opaque bytes.
type IRQChip struct {
	ChipID uint32
	Pad    uint32
	Chip   [512]byte
}

// GetIRQChip issues KVM_GET_IRQCHIP for chipID (IRQChipPICMaster,
// IRQChipPICSlave or IRQChipIOAPIC).
func (v *VM) GetIRQChip(chipID uint32) (*IRQChip, error) {
	const op = "KVM_GET_IRQCHIP"
	if chipID > IRQChipIOAPIC {
		return nil, opError(op, fmt.Errorf("bad chip id %d", chipID))
	}
	c := &IRQChip{ChipID: chipID}
	if _, err := ioctlPtr(v.fd, kvmGetIRQChip, op, c); err != nil {
		return nil, err
	}
	return c, nil
}

// SetIRQChip issues KVM_SET_IRQCHIP with c (as read by GetIRQChip).
func (v *VM) SetIRQChip(c *IRQChip) error {
	const op = "KVM_SET_IRQCHIP"
	if c == nil {
		return opError(op, fmt.Errorf("nil state"))
	}
	if c.ChipID > IRQChipIOAPIC {
		return opError(op, fmt.Errorf("bad chip id %d", c.ChipID))
	}
	cp := *c
	_, err := ioctlPtr(v.fd, kvmSetIRQChip, op, &cp)
	return err
}

// PITChannelState mirrors struct kvm_pit_channel_state: one i8254 counter.
type PITChannelState struct {
	Count         uint32 // can be 65536
	LatchedCount  uint16
	CountLatched  uint8
	StatusLatched uint8
	Status        uint8
	ReadState     uint8
	WriteState    uint8
	WriteLatch    uint8
	RWMode        uint8
	Mode          uint8
	BCD           uint8
	Gate          uint8
	CountLoadTime int64 // host ktime in ns
}

// PITState2 mirrors struct kvm_pit_state2: the in-kernel PIT.
type PITState2 struct {
	Channels [3]PITChannelState
	Flags    uint32 // PITFlagsHPETLegacy, PITFlagsSpeakerDataOn
	Reserved [9]uint32
}

// PITState2.Flags bits (KVM_PIT_FLAGS_*).
const (
	PITFlagsHPETLegacy    = 1 << 0 // KVM_PIT_FLAGS_HPET_LEGACY
	PITFlagsSpeakerDataOn = 1 << 1 // KVM_PIT_FLAGS_SPEAKER_DATA_ON
)

// GetPIT2 issues KVM_GET_PIT2.
func (v *VM) GetPIT2() (*PITState2, error) {
	s := &PITState2{}
	if _, err := ioctlPtr(v.fd, kvmGetPIT2, "KVM_GET_PIT2", s); err != nil {
		return nil, err
	}
	return s, nil
}

// SetPIT2 issues KVM_SET_PIT2.
func (v *VM) SetPIT2(s *PITState2) error {
	if s == nil {
		return opError("KVM_SET_PIT2", fmt.Errorf("nil state"))
	}
	cp := *s
	_, err := ioctlPtr(v.fd, kvmSetPIT2, "KVM_SET_PIT2", &cp)
	return err
}
