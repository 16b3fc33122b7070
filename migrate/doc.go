// Package migrate implements godwit's live-migration engine: the wire format, the pre-copy source and the receiving destination. It talks to the VM only through interfaces, so it is tested against a fake VM without KVM.
package migrate
