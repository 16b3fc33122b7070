package migrate

import "time"

// Migration status values of Stats.Status and DestStats.Status, as QEMU's
// query-migrate names them.
const (
	StatusActive    = "active"
	StatusCompleted = "completed"
	StatusFailed    = "failed"
	StatusCancelled = "cancelled"
)

// PageStats counts pages (or, in the disk fields, disk blocks) by how
// they travelled.
type PageStats struct {
	// Normal pages were sent raw.
	Normal uint64 `json:"normal"`
	// Zero pages were sent as a bit.
	Zero uint64 `json:"zero"`
	// Compressed pages were sent LZ4-compressed (when that shrank them).
	Compressed uint64 `json:"compressed"`
	// Deduplicated pages were sent as a reference to a page of equal
	// content that the same round sent (never disk blocks).
	Deduplicated uint64 `json:"deduplicated"`
}

// Total is the number of pages (or blocks) counted, however they travelled.
func (p PageStats) Total() uint64 { return p.Normal + p.Zero + p.Compressed + p.Deduplicated }

func (p *PageStats) add(c batchCounts) {
	p.Normal += c.normal
	p.Zero += c.zero
	p.Compressed += c.compressed
	p.Deduplicated += c.deduplicated
}

// Stats is the source's record of a migration. Field names follow QEMU's
// query-migrate where they overlap; durations are milliseconds.
type Stats struct {
	// Status is active, completed, failed or cancelled.
	Status string `json:"status"`
	// Error is the failure, when Status is failed or cancelled.
	Error string `json:"error,omitempty"`
	// SetupMs covers the handshake and starting the dirty log.
	SetupMs float64 `json:"setup_ms"`
	// TotalMs is the whole migration, start to RESUMED (or failure).
	TotalMs float64 `json:"total_ms"`
	// DowntimeMs runs on the source's clock from calling Source.Pause
	// to reading RESUMED; StopAndCopy breaks it down.
	DowntimeMs float64 `json:"downtime_ms"`
	// ExpectedDowntimeMs is the policy's last estimate before pausing.
	ExpectedDowntimeMs float64 `json:"expected_downtime_ms"`
	// Rounds counts memory rounds, the full copy and the final one
	// included.
	Rounds int `json:"rounds"`
	// TransferredBytes counts every byte written to the connection.
	TransferredBytes uint64 `json:"transferred_bytes"`
	// Pages counts sent pages over all rounds.
	Pages PageStats `json:"pages"`
	// Mbps is the average throughput, megabits per second.
	Mbps float64 `json:"mbps"`
	// DirtyPagesRate is the guest's dirtying rate measured after the
	// last iterative round (not round 0), pages per second: the pages
	// the dirty-log fetch found over the time since the previous fetch.
	DirtyPagesRate float64 `json:"dirty_pages_rate"`
	// ThrottlePct is the highest auto-converge throttle applied.
	ThrottlePct int `json:"throttle_pct"`
	// FinalSyncMs is the paused memory round as the source sees it: the
	// final dirty-log fetch and writing the last pages, from the end of
	// the pause (DowntimeBreakdown.FinalSyncMs).
	FinalSyncMs float64 `json:"final_sync_ms"`
	// FinalRoundMs is the paused memory round end to end: from its
	// MEMORY_BEGIN to the destination's ROUND_ACK, every page applied.
	FinalRoundMs float64 `json:"final_round_ms"`
	// FinalApplyMs is the destination's own time for the paused round,
	// as its ROUND_ACK reported (MEMORY_BEGIN read to last page applied).
	FinalApplyMs float64 `json:"final_apply_ms"`
	// SwitchoverMs is the downtime that is not the final round:
	// pausing, fetching the dirty log, the state, restoring, starting,
	// and the round trips. Options.SwitchoverCost of a later migration
	// of the same kind of VM can start from it.
	SwitchoverMs float64 `json:"switchover_ms"`
	// StateSaveMs is Source.SaveState.
	StateSaveMs float64 `json:"state_save_ms"`
	// RestoreMs is the destination's Target.RestoreState, as it reported.
	RestoreMs float64 `json:"restore_ms"`
	// StartMs is the destination's Target.Start, as it reported.
	StartMs float64 `json:"start_ms"`
	// StopAndCopy breaks the downtime down into consecutive parts; set
	// once the migration completed.
	StopAndCopy *DowntimeBreakdown `json:"stop_and_copy,omitempty"`

	// Storage is set when the VM's disks moved with it (a storage
	// migration); the Disk fields are zero (and omitted) otherwise.
	Storage bool `json:"storage,omitempty"`
	// DiskTotalBytes is the size of all the VM's disks together.
	DiskTotalBytes uint64 `json:"disk_total_bytes,omitzero"`
	// DiskTransferredBytes counts the wire bytes of the DISK_BATCH
	// frames (included in TransferredBytes).
	DiskTransferredBytes uint64 `json:"disk_transferred_bytes,omitzero"`
	// DiskBlocks counts the disk blocks (of DiskBlockSize bytes) sent
	// over all rounds by encoding; holes of sparse images are not sent.
	DiskBlocks PageStats `json:"disk_blocks,omitzero"`
	// DiskDirtyBlocksRate is the guest's disk writing rate measured after
	// the last iterative round (not round 0), blocks per second: the
	// blocks found written over the time since the previous fetch.
	DiskDirtyBlocksRate float64 `json:"disk_dirty_blocks_rate,omitzero"`
	// DiskRounds counts the rounds that sent disk blocks.
	DiskRounds int `json:"disk_rounds,omitzero"`
}

// DestStats is the destination's record of a migration.
type DestStats struct {
	// Status is active, completed, failed or cancelled.
	Status string `json:"status"`
	// Error is the failure, when Status is failed or cancelled.
	Error string `json:"error,omitempty"`
	// TotalMs runs from the first byte read to RESUMED sent.
	TotalMs float64 `json:"total_ms"`
	// Rounds counts memory rounds received.
	Rounds int `json:"rounds"`
	// ReceivedBytes counts frame bytes read.
	ReceivedBytes uint64 `json:"received_bytes"`
	// Pages counts received pages.
	Pages PageStats `json:"pages"`
	// Storage is set when the disks came in the stream.
	Storage bool `json:"storage,omitempty"`
	// DiskBlocks counts received disk blocks by encoding.
	DiskBlocks PageStats `json:"disk_blocks,omitzero"`
	// DiskCommitMs is TargetDisk.Commit of every disk after COMPLETE
	// (fsync, final name), before the state is restored.
	DiskCommitMs float64 `json:"disk_commit_ms,omitzero"`
	// RestoreMs is Target.RestoreState.
	RestoreMs float64 `json:"restore_ms"`
	// StartMs is Target.Start.
	StartMs float64 `json:"start_ms"`
	// CompleteToResumedMs runs from reading COMPLETE to writing RESUMED:
	// RestoreMs, StartMs and the receiver's own bookkeeping. RESUMED
	// reports it to the source as handle_ns.
	CompleteToResumedMs float64 `json:"complete_to_resumed_ms"`
}

// Progress is reported to Options.Progress after every round, for a live
// display.
type Progress struct {
	// Round is the round just finished.
	Round int `json:"round"`
	// Elapsed is the time since Send started.
	Elapsed time.Duration `json:"elapsed_ns"`
	// TransferredBytes so far.
	TransferredBytes uint64 `json:"transferred_bytes"`
	// RemainingPages is the dirty set the next round will send.
	RemainingPages uint64 `json:"remaining_pages"`
	// TotalPages is the size of guest RAM in pages.
	TotalPages uint64 `json:"total_pages"`
	// Mbps is the throughput of the round just finished.
	Mbps float64 `json:"mbps"`
	// ExpectedDowntime is the policy's current estimate.
	ExpectedDowntime time.Duration `json:"expected_downtime_ns"`
	// ThrottlePct is the throttle now applied.
	ThrottlePct int `json:"throttle_pct"`
	// DiskRemainingBlocks is, in a storage migration, the disk blocks
	// (of DiskBlockSize bytes) the next round will send.
	DiskRemainingBlocks uint64 `json:"disk_remaining_blocks,omitzero"`
	// DiskTotalBytes is the size of the disks being sent.
	DiskTotalBytes uint64 `json:"disk_total_bytes,omitzero"`
	// DiskTransferredBytes is the wire bytes of disk blocks so far.
	DiskTransferredBytes uint64 `json:"disk_transferred_bytes,omitzero"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func mbps(bytes uint64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(bytes) * 8 / 1e6 / d.Seconds()
}

// DestRoundTrace is the destination's record of one memory round, given
// to ReceiveOptions.Trace once every page of the round is applied.
type DestRoundTrace struct {
	// Round is the round number.
	Round int `json:"round"`
	// Start is when MEMORY_BEGIN arrived, relative to the start of Receive.
	Start time.Duration `json:"start_ns"`
	// Duration runs from MEMORY_BEGIN to the last page applied.
	Duration time.Duration `json:"duration_ns"`
	// ReadWait is the time spent waiting for frames from the source.
	ReadWait time.Duration `json:"read_wait_ns"`
	// Apply is the time spent decoding and writing pages, summed over
	// the goroutines that do it.
	Apply time.Duration `json:"apply_ns"`
	// Drain is the wait at ROUND_END for the last pages to be applied.
	Drain time.Duration `json:"drain_ns"`
	// PageCounts splits the round's pages by encoding.
	PageCounts PageStats `json:"page_counts"`
	// DiskBlockCounts splits the round's disk blocks by encoding.
	DiskBlockCounts PageStats `json:"disk_block_counts,omitzero"`
}
