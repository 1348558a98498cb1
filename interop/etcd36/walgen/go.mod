module github.com/etckit/etckit/interop/etcd36/walgen

go 1.26.0

replace github.com/etckit/etckit => ../../..

require (
	github.com/etckit/etckit v0.0.0
	go.etcd.io/raft/v3 v3.7.0
	google.golang.org/protobuf v1.36.12
)

require golang.org/x/sys v0.49.0 // indirect
