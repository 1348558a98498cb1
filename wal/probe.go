package wal

import (
	"errors"
	"io"

	"github.com/etckit/etckit/vfs"
)

// ProbeAfter looks at the bytes after the frame at off in the segment at
// path (in fsys) and counts the frames that follow it and decode as
// records etcd would write (ProbeRecord), with the highest commit of the
// HardStates among them. Nothing it finds is verified (no CRC chain
// reaches past damage): it tells a torn final write, followed by nothing,
// from damage followed by records, possibly committed ones. A frame whose
// length does not fit in the file ends the probe when it is the first;
// after it, zeros and frames that do not decode are skipped 8 bytes at a
// time, looking for a frame written past a torn sector.
func ProbeAfter(fsys vfs.FS, path string, off int64) (frames int, commit uint64, err error) {
	f, err := fsys.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	size := fi.Size()
	const maxProbe = 64 << 20
	first := true
	var hdr [frameHeaderBytes]byte
	for off+frameHeaderBytes <= size {
		if _, err := f.ReadAt(hdr[:], off); err != nil {
			return frames, commit, nil
		}
		if allZero(hdr[:]) {
			// Zeros; look a little further for a frame written past a
			// torn sector: skip to the next 8-byte word.
			if first {
				return frames, commit, nil
			}
			off += frameHeaderBytes
			continue
		}
		ln, pad := DecodeFrameHeader(hdr[:])
		if ln > size-off-frameHeaderBytes-pad || ln > maxProbe {
			if first {
				return frames, commit, nil
			}
			off += frameHeaderBytes
			continue
		}
		if !first {
			buf := make([]byte, ln)
			if _, err := f.ReadAt(buf, off+frameHeaderBytes); err != nil && !errors.Is(err, io.EOF) {
				return frames, commit, nil
			}
			rec, ok := ProbeRecord(buf)
			if !ok {
				off += frameHeaderBytes
				continue
			}
			frames++
			if rec.Type == StateType && rec.Data != nil {
				if st, err := UnmarshalHardState(rec.Data); err == nil {
					commit = max(commit, st.GetCommit())
				}
			}
		}
		first = false
		off += frameHeaderBytes + ln + pad
	}
	return frames, commit, nil
}
