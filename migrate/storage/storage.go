// Package storage is the host side of a storage migration's disk images,
// the files under the migrate engine's SourceDisk and TargetDisk.
//
// On the source (source.go), an image is opened read-only for the
// migration, so the migration never modifies it, and its data is found
// with SEEK_DATA/SEEK_HOLE, so the holes of a sparse image are not sent.
//
// On the destination (place.go, image.go), Place decides where each
// image goes (`receive --disk-map OLD=NEW`, else `--storage-dir DIR`
// with the source image's base name) and refuses, before anything
// moves, an image whose file exists (unless overwriting), two images on
// one path, or a file system with less free space than the source images
// have allocated. Create makes each image empty and sparse under a
// hidden temporary name beside its final path, locked (flock) while the
// receiving process lives; Commit makes it durable and renames it to its
// final path once every block arrived; Remove deletes it when the
// migration fails. A receiver killed mid-migration cannot remove its
// temporary file: the next Create for the same path deletes it once no
// process holds its lock, and the final path never holds a partial
// image.
package storage
