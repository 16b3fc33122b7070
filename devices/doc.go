// Package devices holds the port-I/O and MMIO bus and the legacy PC devices godwit emulates: the 8250 UART, the i8042 reset line, CMOS/RTC and port sinks.
package devices
