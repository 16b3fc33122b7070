// Package devices holds the port-I/O and MMIO bus and the legacy PC devices
// godwit emulates: the 8250/16550A UART, the i8042 controller (reset line
// only, no keyboard), the CMOS/RTC, system control port A (0x92) and port
// sinks such as the POST code port 0x80.
//
// Every value a device receives comes from the guest and is treated as
// hostile: offsets and access widths are checked, nothing panics, and saved
// state is validated before it is restored.
//
// Devices are called from vCPU threads concurrently; each device guards its
// own state with a mutex, and the Bus is safe for concurrent lookups while
// devices are registered.
package devices
