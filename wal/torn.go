package wal

// IsTornWrite is etcd's torn-write rule, isolated so it can be tested and
// reported by name: frame holds the N+P bytes that follow a length word and
// fileOffset is the offset of frame[0] in its segment. The frame is split at
// every 512-byte boundary of the file offset; if any of the pieces is all
// zero bytes, the record is judged torn (a sector that never reached the
// disk, since preallocated space reads as zeros).
//
// The rule is a heuristic: a record whose data really contains 512 aligned
// zero bytes and is damaged elsewhere is misjudged as torn. etcd applies it
// only to the last segment of the log, and so do we.
func IsTornWrite(frame []byte, fileOffset int64) bool {
	for len(frame) > 0 {
		n := int(sectorBytes - fileOffset%sectorBytes)
		if n > len(frame) {
			n = len(frame)
		}
		if allZero(frame[:n]) {
			return true
		}
		frame = frame[n:]
		fileOffset += int64(n)
	}
	return false
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
