package server

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// socketControl sets etcd's socket options (--socket-reuse-port,
// --socket-reuse-address) on a listener's socket before it binds.
func (c *Config) socketControl(_, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		if c.SocketReuseAddress {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
				return
			}
		}
		if c.SocketReusePort {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}
	})
	if err != nil {
		return err
	}
	return serr
}
