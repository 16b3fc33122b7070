// Package migrate implements godwit's live-migration engine: the wire
// format, the pre-copy source (Send), the receiving destination (Receive),
// page batches (zero pages as a bit, LZ4 when it shrinks a page), disk
// batches of a storage migration (see "Storage"), the stop-iterating
// policy (Decide) and statistics. It talks to the VM only through the
// Source and Target interfaces (and StorageSource, StorageTarget), so it
// is tested against a fake VM (package migratetest) without KVM.
//
// # Frames
//
// Everything on the wire is little-endian. A frame is
//
//	type u16 | flags u16 | length u32 | payload [length]byte | checksum u32
//
// where the checksum covers header and payload: the CRC-32C (Castagnoli),
// or, on a PAGE_BATCH or DISK_BATCH frame with flag 0x8000 (version 4),
// the low 32 bits of its XXH64 with seed 0. Both catch a corrupted
// stream; XXH64 is plain 64-bit integer code, about ten times cheaper than
// the CRC32 instruction where the CPU is emulated (QEMU's TCG, as in the
// nested host) and cheaper natively too, and batches are nearly all the
// bytes; the small control frames keep the CRC-32C. The reader
// rejects unknown types, flags a type does not define, lengths outside the
// type's bounds (no payload exceeds MaxPayload) and checksum mismatches.
// The receiver checks the checksums of PAGE_BATCH and DISK_BATCH frames
// on its workers, each just before it writes the batch, so that its
// reading goroutine only reads; a damaged batch fails the migration with
// the checksum's error (also when its header fails to parse first) and
// nothing of it reaches RAM or a disk.
//
//	1  HELLO         S→D  magic "GODWITMG", version u32, page_size u32,
//	                      region_count u32 (≤ MaxRegions),
//	                      region_count × {gpa u64, size u64},
//	                      config_len u32 (≤ MaxConfigSize), config
//	2  ACCEPT        D→S  empty
//	3  REFUSE        D→S  reason (UTF-8, ≤ MaxReason): the TargetFactory's
//	                      error verbatim, or a version/layout mismatch
//	4  MEMORY_BEGIN  S→D  round u32
//	5  PAGE_BATCH    S→D  see below
//	6  ROUND_END     S→D  round u32, pages u64, bytes u64; from version 3
//	                      on also disk_blocks u64 (blocks of the round's
//	                      DISK_BATCH frames, zero blocks included)
//	7  STATE         S→D  a chunk (≤ 1 MiB) of the encoded state; flag 1
//	                      (more) on every chunk but the last
//	8  COMPLETE      S→D  empty
//	9  RESUMED       D→S  restore_ns u64, start_ns u64, then a timings
//	                      block (see below)
//	10 ERROR         both reason (≤ MaxReason); aborts the migration
//	11 ROUND_ACK     D→S  round u32, apply_ns u64: every page of the round
//	                      is in RAM (and every disk block durable in its
//	                      image); apply_ns runs from its MEMORY_BEGIN to
//	                      the last page applied; from version 4 on also
//	                      read_wait_ns u64 (waiting for the round's
//	                      frames) and work_ns u64 (decoding them, summed
//	                      over the workers); all informational
//	12 STORAGE       S→D  from version 3 on, right after HELLO: flags u32
//	                      (bit 0: storage included; no other bit),
//	                      disk_count u32 (≤ MaxDisks; 0 without bit 0),
//	                      disk_count × {size u64 (a multiple of 512 in
//	                      [512, MaxDiskSize]), block_size u32 (=
//	                      DiskBlockSize)}
//	13 DISK_BATCH    S→D  from version 3 on, inside a round: see below
//
// This is protocol version 4, which adds the XXH64 trailer of batches
// (flag 0x8000), the copy encoding of a page (deduplication) and
// ROUND_ACK's read_wait_ns and work_ns. Version 3 added storage migration (STORAGE, DISK_BATCH,
// ROUND_END's disk_blocks); version 2 is version 3 without them, and
// version 1 had no ROUND_ACK. HELLO has the same layout in every version,
// so that any receiver reads the version and refuses one it does not
// speak with REFUSE (a receiver ignores what a later version appends to
// HELLO). Send speaks version 4, with a STORAGE frame whether disks move
// or not (flags 0 and no disks when they do not): an older receiver
// refuses it cleanly before anything moves, and the source adds to its
// reason that the destination's godwit is older. Receive takes versions 2
// to 4.
//
// A PAGE_BATCH covers up to MaxBatchPages pages of one memory region:
//
//	region u32 | first_page u64 | count u32 (1..MaxBatchPages)
//	present bitmap [(count+7)/8]byte   bit i (LSB first) = page first+i sent
//	zero bitmap    [(count+7)/8]byte   subset of present: page is all zero
//	for each present, non-zero page in order:
//	    encoding u8 (0 raw, 1 LZ4 block, 2 copy) | length u16 | data [length]byte
//
// Raw pages are exactly memory.PageSize bytes; LZ4 pages are shorter than a
// page and must decompress to exactly one page. A copy (version 4) is 12
// bytes, region u32 | page u64: the page equals that page, which the same
// round sends with data (raw or LZ4, in this batch or another, before or
// after); the receiver copies it at ROUND_END, once the round's batches
// are all in RAM, and fails the migration when the page named lies
// outside RAM, is the page itself, or was not sent with data this round.
// Bitmap bits past count must be zero, and nothing may follow the last
// page.
//
// A DISK_BATCH covers up to MaxDiskBatchBlocks blocks of DiskBlockSize
// bytes of one disk (the last block of a disk is shorter when its size is
// not a multiple of DiskBlockSize):
//
//	disk u32 | first_block u64 | count u32 (1..MaxDiskBatchBlocks)
//	present bitmap [(count+7)/8]byte   bit i (LSB first) = block first+i sent
//	zero bitmap    [(count+7)/8]byte   subset of present: block is all zero
//	for each present, non-zero block in order:
//	    encoding u8 (0 raw, 1 LZ4 block) | length u32 | data [length]byte
//
// The disk index is below STORAGE's disk_count and the blocks lie inside
// the size STORAGE declared for it; a raw block has exactly the block's
// length, an LZ4 block is shorter and must decompress to exactly the
// block's length; bitmap bits past count must be zero, a batch carries at
// least one block, and nothing may follow the last one.
//
// RESUMED reports how long the destination took, on its own clock, so
// the source can break its downtime down (DowntimeBreakdown):
//
//	restore_ns u64 | start_ns u64 |
//	timings_version u16 | timings_len u16 (≤ MaxTimingsSize) | timings
//
// Timings version 1 is handle_ns u64 (timings_len 8): from reading
// COMPLETE to writing RESUMED, Target.RestoreState (restore_ns) and
// Target.Start (start_ns) included. Each duration is at most
// MaxReportedDuration and restore_ns + start_ns ≤ handle_ns. A RESUMED
// of exactly 16 bytes (a destination from before the timings block) has
// no handle_ns. A later layout takes the next timings version; a reader
// rejects versions it does not know, a length other than the version's,
// trailing bytes and out-of-bound values. Rejected timings are dropped
// from the statistics but do not fail the migration: an intact RESUMED
// frame after COMPLETE means the VM runs on the destination, and
// resuming the source then would run the guest twice.
//
// The encoded state (all STATE chunks concatenated, ≤ MaxStateSize) is
//
//	count u32 (≤ MaxSections)
//	count × {id_len u16 (1..MaxSectionID) | id | version u32 |
//	         data_len u32 | data}
//
// with unique IDs.
//
// # Conversation
//
//	S: HELLO [STORAGE]             D: ACCEPT | REFUSE
//	S: MEMORY_BEGIN(0) PAGE_BATCH* ROUND_END(0)        all of RAM
//	                               D: ROUND_ACK(0)
//	S: MEMORY_BEGIN(n) PAGE_BATCH* ROUND_END(n) ...    dirty pages, VM running
//	                               D: ROUND_ACK(n)
//	   (source pauses the VM)
//	S: MEMORY_BEGIN(n+1) PAGE_BATCH* ROUND_END(n+1)    last dirty pages
//	                               D: ROUND_ACK(n+1)
//	S: STATE+ COMPLETE             D: (restore, start) RESUMED
//
// In a storage migration every round's PAGE_BATCH frames are interleaved
// with DISK_BATCH frames: round 0 carries every allocated block of every
// disk, later rounds the blocks the guest wrote since the previous round,
// the paused round the last ones.
//
// Flow control: before deciding on another round, the source waits for
// the ROUND_ACK of the round it just sent, so it never runs ahead of the
// destination and the paused round never queues behind a backlog. Each
// round streams whole (round 0 is all of RAM, unacknowledged until its
// end). The source does not wait for the final round's ROUND_ACK before
// STATE; it arrives before RESUMED. The source's reader accepts
// ROUND_ACKs only in round order, only for rounds whose ROUND_END it
// sent, and RESUMED only once every round is acknowledged; anything else
// from the destination is a protocol error.
//
// The round's time from MEMORY_BEGIN to ROUND_ACK is the end-to-end cost
// the policy prices pages with (see Decide): encoding, the link, and the
// destination decoding and writing pages, not just local writes.
//
// Either side may send ERROR at any point; the other side fails the
// migration with its reason.
//
// # Receiver state machine
//
// Receive enforces it; any frame not listed for the current state fails
// the migration with ErrProtocol, naming the frame and the state. ERROR is
// accepted in every state and fails the migration with ErrPeerAborted.
//
//	WaitHello      HELLO: validate magic, version (2 to 4; REFUSE
//	               otherwise), page size. Version 3 or 4 → WaitStorage;
//	               version 2: build as below without storage.
//	WaitStorage    STORAGE (bounds checked) → build: call the
//	               TargetFactory; check its memory layout matches
//	               HELLO's, and its disks (StorageTarget) STORAGE's:
//	               as many, of the same sizes, and none when storage is
//	               not included. ACCEPT → WaitMemory, or REFUSE → Failed.
//	WaitMemory     MEMORY_BEGIN(0) → InRound
//	InRound        PAGE_BATCH → InRound (header and bitmaps checked, a
//	               page the round already delivered refused; pages then
//	               written into Target.Memory by ReceiveOptions.Workers
//	               goroutines while reading goes on)
//	               DISK_BATCH, storage included only → InRound (header
//	               and bitmaps checked, a block the round already
//	               delivered refused; blocks then written into the
//	               TargetDisk by the same goroutines; a zero block after
//	               round 0 is cleared with TargetDisk.Zero)
//	               ROUND_END(current round; page and disk block counts
//	               must match what arrived): wait until every page and
//	               block is written, perform the round's copies, Sync
//	               the disks the round wrote, send ROUND_ACK →
//	               BetweenRounds
//	BetweenRounds  MEMORY_BEGIN(previous round + 1) → InRound
//	               STATE → WaitState
//	WaitState      STATE (only after a chunk flagged more) → WaitState
//	               COMPLETE (only after the last chunk, and only when every
//	               page of RAM has arrived at least once) → Restoring
//	Restoring      TargetDisk.Commit of every disk (durable, final name),
//	               Target.RestoreState, Target.Start, send RESUMED → Done
//	Failed         reached from any state on an error: page writers
//	               stopped, Target.Discard (which deletes the images a
//	               storage migration was receiving), ERROR sent (unless
//	               the peer sent ERROR or we sent REFUSE)
//
// ROUND_ACK (and ACCEPT, REFUSE, RESUMED) travel D→S only: in every
// receiver state they are unexpected frames.
//
// Zero pages: the receiver tracks which pages it has written non-zero
// data into. With ReceiveOptions.AssumeZeroed (the Target's memory is
// zero-filled when the factory returns it, as fresh memfd RAM is), a zero
// page for a page never written costs nothing: no read, no clear, no page
// fault; and a batch's data pages never written before are allocated with
// one madvise(MADV_POPULATE_WRITE) per run of them (Memory.Populate)
// rather than a page fault each. Without it every page is assumed to hold
// junk, and zero pages are checked and cleared.
//
// The receiver allocates in proportion to the VM the factory built (the
// page-received, page-written and current-round bitmaps, and a bit per
// DiskBlockSize block of every disk the factory created, whose sizes it
// checked), plus constant bounds: at most Workers+2 frame buffers of at
// most MaxPayload, a DiskBlockSize scratch buffer per worker, the state
// of at most MaxStateSize, and the HELLO config of at most
// MaxConfigSize. No length read from the stream sizes an allocation
// beyond those bounds.
//
// # Storage
//
// A storage migration moves the VM's disks with it (`godwit migrate
// --include-storage`): Send includes storage when its Source is a
// StorageSource, and the destination's Target is then a StorageTarget
// whose factory created a new, sparse image per disk (package
// migrate/storage does that for godwit).
//
// The unit is the DiskBlockSize block, the granularity of the
// SourceDisk's written-block bitmap. After starting the dirty log, Send
// clears every disk's written blocks and takes its allocated ones
// (SourceDisk.Allocated: SEEK_DATA/SEEK_HOLE, so holes are never sent):
// round 0 sends those, interleaved with the pages of RAM so that each
// kind has put about as many bytes on the wire as the other, through the
// one frame writer and its one bandwidth budget. After each round Send
// takes the written blocks (SourceDisk.TakeWritten) with the dirty log,
// and the next round sends them. A block that reads as zeros travels as a
// bit; the others raw, or LZ4-compressed when that shrinks them, like
// pages. Reading a block after taking its written bit is safe while the
// guest writes: a write completing later marks the block again. The
// paused round takes the written blocks after Source.Pause, which
// completes every request in flight, so the last blocks are the guest's
// last writes. The engine only reads source disks: the source's images
// are never modified by a migration, and stay the VM's disks when it
// fails.
//
// The policy weighs a disk block as DiskBlockSize/PageSize pages, both
// in the measured cost of a round and in what is pending: written blocks
// count toward the expected downtime (see Decide).
//
// The destination writes blocks as they come (a new image reads as
// zeros, so zero blocks of round 0 cost nothing), syncs the disks a round
// wrote before acknowledging it, and commits every disk (TargetDisk.Commit:
// durable, renamed to its final path) after COMPLETE and before restoring
// the VM that will open them. Any failure discards the Target, which
// deletes the partial images.
//
// # Failure and switchover
//
// Until RESUMED arrives, a failure on the source stops the dirty log,
// lifts the throttle, resumes the VM if Send paused it, and sends ERROR:
// the source VM runs on unchanged and can migrate again. When the failure
// (a cancel, the timeout) cut a frame off midway, the source first sends
// the rest of that frame, so that the destination reads ERROR as a frame
// and learns the reason.
//
// Sending COMPLETE is the point of no return for cancellation: from then
// on the destination may start the VM at any moment, so Send ignores ctx
// and waits for RESUMED (bounded by Options.Timeout); resuming the source
// on a cancel there could run the guest twice. The destination starts its
// VM before sending RESUMED; if that write fails it discards the VM, since
// the source will resume its own. What remains is a connection failure or
// timeout between COMPLETE and RESUMED: the source resumes while the
// destination may already run. Shared storage must fence on top of this
// protocol (as with QEMU without postcopy); a READY/GO exchange before
// Start would narrow the window further.
package migrate
