// Package bench describes a live-migration benchmark: the sweep a user asks
// for (Spec), the points, variants and runs it plans (MakePlan), what one run
// measured (Result), the whole record (Report, written as results.json) and
// its summary: medians and spreads per point and variant, and the ratios of
// every godwit variant to the QEMU peer (Summarize).
//
// A point is one guest and policy configuration: guest memory size, the
// embedded test guest's dirty rate (pages per second) and working-set size
// (the range it dirties), and the downtime target. A variant is one way of
// migrating it: godwit with LZ4 compression, godwit without, or QEMU/KVM
// (which has no comparable page compression and runs each point once per
// repetition). A run is one point, one variant, one repetition.
//
// The package runs nothing: bench/runner does (KVM, processes, QMP),
// bench/report writes the files and the summary table, bench/plot draws the
// figures, bench/host describes the machine. docs/benchmarks.md explains
// the method.
package bench
