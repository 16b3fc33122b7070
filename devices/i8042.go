package devices

import "sync"

// I8042 port layout: the data port is at the base the device is registered
// at, the command/status port four above it (0x60 and 0x64 on a PC).
const (
	// I8042DataOffset is the offset of the data port (0x60).
	I8042DataOffset = 0
	// I8042CommandOffset is the offset of the command/status port (0x64).
	I8042CommandOffset = 4
)

// i8042 controller commands (written to the command port).
const (
	i8042ReadCTR     = 0x20 // 0x20-0x3f: read controller RAM (0x20 is the command byte)
	i8042WriteCTR    = 0x60 // 0x60-0x7f: write controller RAM (next data byte)
	i8042AuxDisable  = 0xa7
	i8042AuxEnable   = 0xa8
	i8042AuxTest     = 0xa9
	i8042SelfTest    = 0xaa
	i8042KbdTest     = 0xab
	i8042KbdDisable  = 0xad
	i8042KbdEnable   = 0xae
	i8042ReadOutPort = 0xd0
	i8042WriteOut    = 0xd1 // next data byte is the output port
	i8042WriteKbdBuf = 0xd2 // next data byte: echoed as keyboard output
	i8042WriteAuxBuf = 0xd3 // next data byte: echoed, but as keyboard output (no mouse port)
	i8042WriteAux    = 0xd4 // next data byte: ignored (no mouse)
	i8042Pulse       = 0xf0 // 0xf0-0xff: pulse output port bits that are 0 in the low nibble

	i8042StatusOBF = 0x01 // output buffer full: a reply waits at the data port
	// i8042StatusIdle is the rest of the status register: system flag
	// (self-test passed) and keyboard not inhibited (no "keylock").
	i8042StatusIdle = 0x04 | 0x10
	ctrKbdInt       = 0x01 // command byte: interrupt on keyboard output
	// maxKbdQueue bounds the keyboard's pending replies.
	maxKbdQueue = 16

	ctrAuxDisable = 0x20
	ctrKbdDisable = 0x10

	outPortReset = 0x01 // active low: 0 holds the CPU in reset
	outPortA20   = 0x02
)

// I8042 is the PS/2 controller as far as a guest without keyboard or mouse
// needs it: the command/data byte exchange Linux performs at boot, and the
// CPU reset line (command 0xfe, or the output port written with bit 0
// clear), and a keyboard that acknowledges its commands (reset, identify,
// LEDs, scan code set...) through IRQ 1, so that a driver's probe finishes
// at once instead of timing out. It never sends key presses. It has no
// mouse port: the AUX interface test fails, the AUX loopback answers as
// the keyboard, and bytes for the mouse get no reply.
//
// One I8042 either sits at 0x60 with size 5 (data at offset 0, command at
// offset 4; offsets 1-3 read 0xff) or is registered as two one-port
// devices, DataPort at 0x60 and CommandPort at 0x64.
type I8042 struct {
	mu      sync.Mutex
	reset   func()
	ctr     byte // controller command byte
	outPort byte
	pending byte // command waiting for its data byte, 0 if none
	out     byte // output buffer
	outFull bool

	irq      IRQLine // IRQ 1, may be nil
	level    bool    // current IRQ 1 level
	kbd      []byte  // keyboard replies waiting for the output buffer
	kbdParam bool    // the keyboard waits for a command's parameter byte
}

// SetIRQ connects the keyboard interrupt (IRQ 1). Call it before the guest
// runs.
func (k *I8042) SetIRQ(irq IRQLine) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.irq = irq
}

// NewI8042 returns a controller that calls reset (which may be nil) when
// the guest pulses the CPU reset line. reset is called without the
// controller's lock held, from the vCPU thread.
func NewI8042(reset func()) *I8042 {
	return &I8042{
		reset: reset,
		// Translated set 2, system flag, keyboard interrupt, no mouse.
		ctr:     0x40 | ctrAuxDisable | 0x04 | 0x01,
		outPort: outPortReset | outPortA20,
	}
}

// Read implements Device (data port at offset 0, status at offset 4).
func (k *I8042) Read(offset uint64, data []byte) {
	if len(data) == 0 {
		return
	}
	FillOnes(data)
	switch offset {
	case I8042DataOffset:
		data[0] = k.readData()
	case I8042CommandOffset:
		data[0] = k.readStatus()
	}
}

// Write implements Device (data port at offset 0, command at offset 4).
func (k *I8042) Write(offset uint64, data []byte) {
	if len(data) == 0 {
		return
	}
	switch offset {
	case I8042DataOffset:
		k.writeData(data[0])
	case I8042CommandOffset:
		k.writeCommand(data[0])
	}
}

// DataPort returns a one-port Device for the data port (0x60).
func (k *I8042) DataPort() Device { return i8042Port{k: k, off: I8042DataOffset} }

// CommandPort returns a one-port Device for the command/status port (0x64).
func (k *I8042) CommandPort() Device { return i8042Port{k: k, off: I8042CommandOffset} }

// i8042Port is one port of an I8042 registered on its own.
type i8042Port struct {
	k   *I8042
	off uint64
}

// Read implements Device for the single port.
func (p i8042Port) Read(offset uint64, data []byte) {
	if offset != 0 {
		FillOnes(data)
		return
	}
	p.k.Read(p.off, data)
}

// Write implements Device for the single port.
func (p i8042Port) Write(offset uint64, data []byte) {
	if offset == 0 {
		p.k.Write(p.off, data)
	}
}

// readStatus returns the status register.
func (k *I8042) readStatus() byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.outFull || len(k.kbd) > 0 {
		return i8042StatusIdle | i8042StatusOBF
	}
	return i8042StatusIdle
}

// readData returns the output buffer (stale when empty) and empties it:
// a controller reply first, then the keyboard's next byte.
func (k *I8042) readData() byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case k.outFull:
		k.outFull = false
	case len(k.kbd) > 0:
		k.out = k.kbd[0]
		k.kbd = k.kbd[1:]
		// Drop the level so that a further byte raises a new edge.
		k.setLevel(false)
	}
	k.updateIRQ()
	return k.out
}

// updateIRQ raises IRQ 1 while a keyboard byte waits and the command byte
// enables keyboard interrupts; k.mu is held. Controller replies are read by
// polling and raise no interrupt.
func (k *I8042) updateIRQ() {
	k.setLevel(!k.outFull && len(k.kbd) > 0 && k.ctr&ctrKbdInt != 0)
}

// setLevel drives IRQ 1 on changes; k.mu is held.
func (k *I8042) setLevel(high bool) {
	if k.irq != nil && high != k.level {
		k.irq.SetLevel(high)
	}
	k.level = high
}

// keyboardCommand answers a byte sent to the keyboard (PS/2 keyboard
// protocol): ACK 0xfa, plus the self-test result after a reset and the ID
// after identify; command parameters are acknowledged too. k.mu is held.
func (k *I8042) keyboardCommand(v byte) {
	var reply []byte
	switch {
	case k.kbdParam:
		k.kbdParam = false
		reply = []byte{0xfa}
	case v == 0xff: // reset: ACK, then basic assurance test passed
		reply = []byte{0xfa, 0xaa}
	case v == 0xf2: // identify: ACK, then an MF2 keyboard's ID
		reply = []byte{0xfa, 0xab, 0x83}
	case v == 0xee: // echo
		reply = []byte{0xee}
	case v == 0xed || v == 0xf0 || v == 0xf3: // LEDs, scan code set, typematic: a parameter follows
		k.kbdParam = true
		reply = []byte{0xfa}
	default:
		reply = []byte{0xfa}
	}
	if len(k.kbd)+len(reply) <= maxKbdQueue {
		k.kbd = append(k.kbd, reply...)
	}
	k.updateIRQ()
}

// reply places v in the output buffer; k.mu is held.
func (k *I8042) reply(v byte) {
	k.out, k.outFull = v, true
}

// writeCommand handles a byte written to the command port.
func (k *I8042) writeCommand(c byte) {
	k.mu.Lock()
	k.pending = 0
	doReset := false
	switch {
	case c >= i8042ReadCTR && c < i8042ReadCTR+0x20:
		if c == i8042ReadCTR {
			k.reply(k.ctr)
		} else {
			k.reply(0)
		}
	case c >= i8042WriteCTR && c < i8042WriteCTR+0x20:
		k.pending = c
	case c == i8042AuxDisable:
		k.ctr |= ctrAuxDisable
	case c == i8042AuxEnable:
		k.ctr &^= ctrAuxDisable
	case c == i8042AuxTest:
		k.reply(0x01) // clock line stuck low: no mouse attached
	case c == i8042SelfTest:
		k.reply(0x55)
	case c == i8042KbdTest:
		k.reply(0x00)
	case c == i8042KbdDisable:
		k.ctr |= ctrKbdDisable
	case c == i8042KbdEnable:
		k.ctr &^= ctrKbdDisable
	case c == i8042ReadOutPort:
		k.reply(k.outPort)
	case c == i8042WriteOut, c == i8042WriteKbdBuf, c == i8042WriteAuxBuf, c == i8042WriteAux:
		k.pending = c
	case c >= i8042Pulse:
		// Bits 0-3 select output port lines to pulse low; bit 0 is reset.
		doReset = c&outPortReset == 0
	}
	k.mu.Unlock()
	if doReset && k.reset != nil {
		k.reset()
	}
}

// writeData handles a byte written to the data port: the argument of the
// pending command, or a byte for the keyboard.
func (k *I8042) writeData(v byte) {
	k.mu.Lock()
	doReset := false
	switch c := k.pending; {
	case c == i8042WriteCTR:
		k.ctr = v
	case c == i8042WriteOut:
		k.outPort = v
		doReset = v&outPortReset == 0
	case c == i8042WriteKbdBuf, c == i8042WriteAuxBuf:
		// Echoed as if the keyboard had sent it. For 0xd3 (AUX
		// loopback) that is the answer of a controller without a mouse
		// port: Linux sees the byte without the AUX status bit, counts
		// the port absent and goes on at once. Without any reply its
		// i8042 driver polls the status port 10,000 times (one VM exit
		// each) before it gives up.
		k.reply(v)
	case c == 0:
		k.keyboardCommand(v)
	}
	if c := k.pending; c == i8042WriteCTR {
		k.updateIRQ()
	}
	k.pending = 0
	k.mu.Unlock()
	if doReset && k.reset != nil {
		k.reset()
	}
}
