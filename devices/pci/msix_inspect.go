package pci

// MSIXInfo is a diagnostic snapshot of an MSI-X capability.
type MSIXInfo struct {
	// Enabled and FunctionMasked are the message control bits.
	Enabled, FunctionMasked bool
	// Masked lists the vectors whose entry is masked; Pending those with
	// their pending bit set.
	Masked, Pending []int
	// Failures counts deliveries that failed.
	Failures uint64
}

// Inspect returns a snapshot of the capability for diagnostics.
func (m *MSIX) Inspect() MSIXInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	info := MSIXInfo{
		Enabled:        m.control&msixEnable != 0,
		FunctionMasked: m.control&msixFunctionMsk != 0,
		Failures:       m.failures.Load(),
	}
	for v := range m.entries {
		if m.entries[v].control&msixVectorMasked != 0 {
			info.Masked = append(info.Masked, v)
		}
		if m.pending[v/64]&(1<<(v%64)) != 0 {
			info.Pending = append(info.Pending, v)
		}
	}
	return info
}
