package vfs

import (
	"errors"
	"io"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// etcd locks WAL segments with open-file-description locks when the kernel
// supports them and with flock otherwise. The two kinds do not exclude each
// other on Linux, so we must pick the same one etcd picks: probe F_OFD_GETLK
// exactly as client/pkg/fileutil does.
var ofdSupported = func() bool {
	getlk := syscall.Flock_t{Type: syscall.F_RDLCK}
	return syscall.FcntlFlock(0, unix.F_OFD_GETLK, &getlk) == nil
}()

func lockFile(f *os.File, wait bool) error {
	if !ofdSupported {
		how := syscall.LOCK_EX
		if !wait {
			how |= syscall.LOCK_NB
		}
		err := syscall.Flock(int(f.Fd()), how)
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return ErrLocked
		}
		return err
	}
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: int16(io.SeekStart)}
	cmd := unix.F_OFD_SETLK
	if wait {
		cmd = unix.F_OFD_SETLKW
	}
	err := syscall.FcntlFlock(f.Fd(), cmd, &lk)
	if errors.Is(err, syscall.EWOULDBLOCK) || errors.Is(err, syscall.EAGAIN) {
		return ErrLocked
	}
	return err
}

func unlockFile(f *os.File) error {
	if !ofdSupported {
		return syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	}
	lk := syscall.Flock_t{Type: syscall.F_UNLCK, Whence: int16(io.SeekStart)}
	return syscall.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk)
}

func datasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }

// preallocate extends the file with fallocate mode 0, falling back to
// ftruncate (a sparse, zero-filled extension) where fallocate is not
// supported, as etcd's fileutil.Preallocate does.
func preallocate(f *os.File, size int64) error {
	err := syscall.Fallocate(int(f.Fd()), 0, 0, size)
	var errno syscall.Errno
	if err != nil && errors.As(err, &errno) && (errno == syscall.ENOTSUP || errno == syscall.EINTR || errno == syscall.EOPNOTSUPP) {
		return f.Truncate(size)
	}
	return err
}

// fileSize is fstat's size, without os.FileInfo's allocation.
func fileSize(f *os.File) (int64, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return 0, err
	}
	return st.Size, nil
}
