// Package vmm is the virtual machine monitor: it assembles guest memory, vCPUs, devices and the boot loader into a running VM, runs the vCPU loops, pauses and resumes the VM and serves its control API.
package vmm
