package dumplogs

import (
	"slices"
	"strings"

	"github.com/etckit/etckit/tools/cli"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// filter is one --entry-type name (etcd-dump-logs' names).
type filter struct {
	name string
	pass func(d *decoded) bool
}

func irrHas(get func(r *pb.InternalRaftRequest) bool) func(*decoded) bool {
	return func(d *decoded) bool { return d.Category == catIRR && d.irr != nil && get(d.irr) }
}

var filterTable = []filter{
	// etcd-dump-logs passes only EntryConfChange; etckit also shows
	// ConfChangeV2 entries here (etcd never writes them).
	{"ConfigChange", func(d *decoded) bool { return d.Class == "conf" }},
	{"Normal", func(d *decoded) bool { return d.Class == "norm" }},
	{"Request", func(d *decoded) bool { return d.Category == catRequest }},
	{"InternalRaftRequest", func(d *decoded) bool { return d.Category == catIRR }},
	{"IRRRange", irrHas(func(r *pb.InternalRaftRequest) bool { return r.Range != nil })},
	{"IRRPut", irrHas(func(r *pb.InternalRaftRequest) bool { return r.Put != nil })},
	{"IRRDeleteRange", irrHas(func(r *pb.InternalRaftRequest) bool { return r.DeleteRange != nil })},
	{"IRRTxn", irrHas(func(r *pb.InternalRaftRequest) bool { return r.Txn != nil })},
	{"IRRCompaction", irrHas(func(r *pb.InternalRaftRequest) bool { return r.Compaction != nil })},
	{"IRRLeaseGrant", irrHas(func(r *pb.InternalRaftRequest) bool { return r.LeaseGrant != nil })},
	{"IRRLeaseRevoke", irrHas(func(r *pb.InternalRaftRequest) bool { return r.LeaseRevoke != nil })},
	{"IRRLeaseCheckpoint", irrHas(func(r *pb.InternalRaftRequest) bool { return r.LeaseCheckpoint != nil })},
}

var filterNames = func() []string {
	n := make([]string, len(filterTable))
	for i, f := range filterTable {
		n[i] = f.name
	}
	return n
}()

// parseFilters parses --entry-type. Unlike etcd-dump-logs, which logs and
// ignores an unknown name, an unknown name is a usage error.
func parseFilters(s string) ([]filter, error) {
	var out []filter
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		i := slices.IndexFunc(filterTable, func(f filter) bool { return f.name == name })
		if i < 0 {
			return nil, cli.Usage("--entry-type: unknown type %q (want one or more of %s)", name, strings.Join(filterNames, ", "))
		}
		out = append(out, filterTable[i])
	}
	return out, nil
}

func passes(filters []filter, d *decoded) bool {
	for _, f := range filters {
		if f.pass(d) {
			return true
		}
	}
	return false
}
