// Package interop holds etckit's differential tests and side-by-side
// benchmarks against etcd's own Go modules (go.etcd.io/etcd/server/v3,
// client/v3 at v3.7.3). It is a separate module so that the product module
// never depends on etcd's server code.
package interop
