package interop
import (
 _ "go.etcd.io/etcd/server/v3/storage/wal"
 _ "go.etcd.io/etcd/server/v3/embed"
 _ "go.etcd.io/etcd/client/v3"
 _ "github.com/etckit/etckit"
)
