package snapshot

import (
	"fmt"
	"io"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/etckit/etckit/engine"
	"github.com/etckit/etckit/tools/cli"
	"github.com/spf13/cobra"
)

type restoreFlags struct {
	o            engine.RestoreOptions
	peerURLs     string
	mmapSize     uint64
	fromDataDir  string
	fromWALDir   string
	toIndex      uint64
	toRevision   int64
	base         string
	printPlan    bool
	clientPort   int
	format       cli.FormatFlag
	dataDirGiven bool
}

func newRestore(cfg Config) *cobra.Command {
	var f restoreFlags
	cmd := &cobra.Command{
		Use:   "restore [FILE] --data-dir DIR --name N --initial-cluster C --initial-cluster-token T --initial-advertise-peer-urls U",
		Short: "Create a new member directory from a snapshot (as etcdutl) or from a data dir at a past index or revision",
		Long: `Restore FILE (an etcdctl/etckit snapshot, or with --skip-hash-check a db copied
out of a data dir) into a new member directory exactly as etcdutl snapshot
restore writes it: the db with its membership replaced by --initial-cluster,
meta consistent_index/term set to the bootstrap index, a WAL (in --wal-dir if
given) with the member's Metadata, one conf-change entry per member,
HardState and snapshot record, and a .snap with the v2 membership JSON.
Member and cluster IDs are derived from the peer URLs and
--initial-cluster-token as etcd derives them, so every member of a cluster
must be restored with the same --initial-cluster and token (see --print-plan).

The directory must be absent or empty and --wal-dir must not exist.

--skip-hash-check: a snapshot file ends with the sha256 of its bbolt image;
restore checks it and refuses a mismatch. A db copied from member/snap/db has
no trailer and is refused unless --skip-hash-check is given, which uses the
file as is, without any integrity check.

--bump-revision B --mark-compacted: the restored store continues at
revision (highest + B) and everything before it is compacted, so clients that
watch or cache by revision (Kubernetes) never see revisions go backwards
after a restore from an older snapshot. B must exceed the number of
revisions written since the snapshot was taken.

Point-in-time restore: --from-data-dir SRC with --to-index N or
--to-revision R restores SRC's state at that raft index (or right after the
entry that created revision R): the newest base at or below the target (SRC's
db, a .snap.db, or an empty store when SRC's WAL reaches back to index 0,
--base picks one kind) plus SRC's committed WAL entries after it, applied to a
copy. SRC is only read.

--print-plan prints, for every member of --initial-cluster, the commands
that restore and start it, and writes nothing.`,
		Args:          cobra.MaximumNArgs(1),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				f.o.SnapshotPath = args[0]
			}
			f.dataDirGiven = cmd.Flags().Changed("data-dir")
			f.o.FS = cfg.FS
			return runRestore(cmd.OutOrStdout(), &f)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.o.DataDir, "data-dir", "", "path to the new data directory (default <name>.etcd)")
	fs.StringVar(&f.o.WALDir, "wal-dir", "", "path to a dedicated WAL directory (default <data-dir>/member/wal); must not exist")
	fs.StringVar(&f.o.Name, "name", engine.DefaultRestoreName, "human-readable name for this member")
	fs.StringVar(&f.o.InitialCluster, "initial-cluster", "", "initial cluster configuration for restore bootstrap (default <name>=http://localhost:2380)")
	fs.StringVar(&f.o.InitialClusterToken, "initial-cluster-token", engine.DefaultRestoreToken, "initial cluster token for the etcd cluster during restore bootstrap")
	fs.StringVar(&f.peerURLs, "initial-advertise-peer-urls", engine.DefaultRestorePeerURL, "list of this member's peer URLs to advertise to the rest of the cluster")
	fs.BoolVar(&f.o.SkipHashCheck, "skip-hash-check", false, "accept a snapshot without sha256 trailer (a db copied from a data dir) and do not check one that has it")
	fs.Uint64Var(&f.o.BumpRevision, "bump-revision", 0, "how much to increase the latest revision after restore (requires --mark-compacted)")
	fs.BoolVar(&f.o.MarkCompacted, "mark-compacted", false, "mark the latest revision after restore as compacted (requires --bump-revision > 0)")
	fs.Uint64Var(&f.mmapSize, "initial-memory-map-size", 10<<30, "accepted for etcdutl compatibility (bbolt's initial mmap size; no effect on the files)")
	fs.StringVar(&f.fromDataDir, "from-data-dir", "", "point-in-time restore: the source member's data directory (read only)")
	fs.StringVar(&f.fromWALDir, "from-wal-dir", "", "point-in-time restore: the source's dedicated WAL directory")
	fs.Uint64Var(&f.toIndex, "to-index", 0, "point-in-time restore: raft index to restore to")
	fs.Int64Var(&f.toRevision, "to-revision", 0, "point-in-time restore: MVCC revision to restore to")
	fs.StringVar(&f.base, "base", "", "point-in-time restore: only use this kind of base (db, snap.db or empty)")
	fs.BoolVar(&f.printPlan, "print-plan", false, "print the restore and start commands for every member of --initial-cluster; write nothing")
	fs.IntVar(&f.clientPort, "plan-client-port", 2379, "client port assumed on each member's peer host in --print-plan")
	cli.AddFormatFlag(cmd, &f.format, cli.Simple, cli.Simple, cli.JSON)
	return cmd
}

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

func runRestore(w io.Writer, f *restoreFlags) error {
	f.o.InitialAdvertisePeerURLs = splitList(f.peerURLs)
	if f.o.InitialCluster == "" {
		f.o.InitialCluster = f.o.Name + "=" + strings.Join(f.o.InitialAdvertisePeerURLs, ","+f.o.Name+"=")
	}
	pitr := f.fromDataDir != "" || f.toIndex != 0 || f.toRevision != 0
	switch {
	case pitr && f.o.SnapshotPath != "":
		return cli.Usage("snapshot restore: give a snapshot FILE or --from-data-dir, not both")
	case pitr && f.fromDataDir == "":
		return cli.Usage("snapshot restore: --to-index/--to-revision need --from-data-dir")
	case pitr && (f.toIndex == 0) == (f.toRevision == 0):
		return cli.Usage("snapshot restore: --from-data-dir needs exactly one of --to-index and --to-revision")
	case !pitr && f.o.SnapshotPath == "":
		return cli.Usage("snapshot restore: missing snapshot FILE (or --from-data-dir with --to-index/--to-revision)")
	case f.o.BumpRevision > 0 && !f.o.MarkCompacted:
		return cli.Usage("snapshot restore: --bump-revision requires --mark-compacted")
	case f.o.MarkCompacted && f.o.BumpRevision == 0:
		return cli.Usage("snapshot restore: --mark-compacted requires --bump-revision > 0")
	}
	if f.printPlan {
		return printPlan(w, f)
	}
	var res *engine.RestoreResult
	var err error
	if pitr {
		res, err = engine.RestorePointInTime(engine.PointInTimeOptions{RestoreOptions: f.o, FromDataDir: f.fromDataDir,
			FromWALDir: f.fromWALDir, ToIndex: f.toIndex, ToRevision: f.toRevision, Base: f.base})
	} else {
		res, err = engine.Restore(f.o)
	}
	if err != nil {
		return err
	}
	o := f.o
	if o.InitialClusterToken == "" {
		o.InitialClusterToken = engine.DefaultRestoreToken
	}
	return printRestore(w, f.format.Value, o, res)
}

func printRestore(w io.Writer, format cli.Format, o engine.RestoreOptions, r *engine.RestoreResult) error {
	if format == cli.JSON {
		o := (&cli.Object{}).Set("dataDir", r.DataDir).Set("walDir", r.WALDir).Set("db", r.DBPath).Set("snap", r.SnapPath)
		o.Set("memberId", fmt.Sprintf("%x", r.MemberID)).Set("clusterId", fmt.Sprintf("%x", r.ClusterID))
		var ms []*cli.Object
		for _, m := range r.Members {
			ms = append(ms, (&cli.Object{}).Set("id", fmt.Sprintf("%x", m.ID)).Set("name", m.Name).Set("peerURLs", m.PeerURLs))
		}
		var old []*cli.Object
		for _, m := range r.SourceMembers {
			old = append(old, (&cli.Object{}).Set("id", fmt.Sprintf("%x", m.ID)).Set("name", m.Name).Set("peerURLs", m.PeerURLs))
		}
		o.Set("members", ms).Set("sourceMembers", old).Set("index", r.Index).Set("revision", r.Revision).Set("compactRevision", r.CompactRevision)
		if p := r.PointInTime; p != nil {
			o.Set("pointInTime", (&cli.Object{}).Set("base", p.BaseKind).Set("basePath", p.BasePath).Set("baseIndex", p.BaseIndex).
				Set("baseRevision", p.BaseRevision).Set("applied", p.Applied).Set("index", p.Index).Set("revision", p.Revision).
				Set("compactRevision", p.CompactRevision).Set("walCommit", p.WALCommit))
		}
		return cli.JSONLine(w, o)
	}
	var b strings.Builder
	if p := r.PointInTime; p != nil {
		base := p.BaseKind
		if p.BasePath != "" {
			base += " " + p.BasePath
		}
		fmt.Fprintf(&b, "point in time: index %d, revision %d (compact revision %d); base %s at index %d (revision %d) + %d WAL entries; source WAL commit %d\n",
			p.Index, p.Revision, p.CompactRevision, base, p.BaseIndex, p.BaseRevision, p.Applied, p.WALCommit)
	}
	fmt.Fprintf(&b, "restored member %x of cluster %x into %s (wal %s)\n", r.MemberID, r.ClusterID, r.DataDir, r.WALDir)
	for _, m := range r.Members {
		fmt.Fprintf(&b, "member %x name=%s peer-urls=%s\n", m.ID, m.Name, strings.Join(m.PeerURLs, ","))
	}
	fmt.Fprintf(&b, "revision %d, compact revision %d, consistent index %d\n", r.Revision, r.CompactRevision, r.Index)
	if len(r.SourceMembers) > 0 && !sameIDs(r.SourceMembers, r.Members) {
		var old []string
		for _, m := range r.SourceMembers {
			old = append(old, fmt.Sprintf("%x (%s)", m.ID, m.Name))
		}
		fmt.Fprintf(&b, "note: new identities: the snapshot's members were %s; the restored cluster has the IDs above (derived from --initial-cluster and --initial-cluster-token), so clients and tools that pinned member or cluster IDs must be updated\n",
			strings.Join(old, ", "))
	}
	if o.BumpRevision == 0 {
		fmt.Fprintf(&b, "note: revisions continue at %d; clients that saw higher revisions before (Kubernetes watch caches) would see them go backwards: restore with --bump-revision N --mark-compacted, N above the revisions written since the snapshot\n", r.Revision)
	}
	start := []string{"etcd", "--name", o.Name, "--data-dir", r.DataDir}
	if o.WALDir != "" {
		start = append(start, "--wal-dir", r.WALDir)
	}
	start = append(start, "--initial-advertise-peer-urls", strings.Join(o.InitialAdvertisePeerURLs, ","),
		"--initial-cluster", o.InitialCluster, "--initial-cluster-token", o.InitialClusterToken)
	fmt.Fprintf(&b, "start it with (plus its client and listen URLs): %s\n", cmdline(start...))
	if o.WALDir != "" {
		fmt.Fprintf(&b, "note: the WAL is in %s: start etcd (or etckit serve) with --wal-dir %s, or it will not find it and bootstrap a brand-new member instead of the restored one\n", r.WALDir, r.WALDir)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func sameIDs(a, b []engine.Member) bool {
	if len(a) != len(b) {
		return false
	}
	ids := map[uint64]bool{}
	for _, m := range a {
		ids[m.ID] = true
	}
	for _, m := range b {
		if !ids[m.ID] {
			return false
		}
	}
	return true
}

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9_./:=,@%+-]+$`)

func shq(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func cmdline(args ...string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = shq(a)
	}
	return strings.Join(q, " ")
}

// clientURL guesses a member's client URL: its first peer URL's host with
// the client port.
func clientURL(peer string, port int) string {
	u, err := url.Parse(peer)
	if err != nil {
		return "http://localhost:" + strconv.Itoa(port)
	}
	host := u.Hostname()
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return u.Scheme + "://" + net.JoinHostPort(strings.Trim(host, "[]"), strconv.Itoa(port))
}

// printPlan prints, for every member of the initial cluster, the commands
// that restore and start it.
func printPlan(w io.Writer, f *restoreFlags) error {
	members, cid, err := engine.InitialMembers(f.o.InitialCluster, f.o.InitialClusterToken)
	if err != nil {
		return err
	}
	names, urls, _ := engine.ParseInitialCluster(f.o.InitialCluster)
	ids := map[string]uint64{}
	for _, m := range members {
		ids[m.Name] = m.ID
	}
	var b strings.Builder
	src := f.o.SnapshotPath
	fmt.Fprintf(&b, "# Restore plan: %d member(s), cluster id %x, token %s.\n", len(names), cid, f.o.InitialClusterToken)
	fmt.Fprintf(&b, "# Member and cluster IDs come from the peer URLs and the token: every member must be\n")
	fmt.Fprintf(&b, "# restored with exactly this --initial-cluster and --initial-cluster-token, from the same snapshot.\n")
	fmt.Fprintf(&b, "# Stop every old member first; start the new ones only after all are restored.\n")
	if f.fromDataDir != "" {
		src = "pitr-snapshot.db"
		target := []string{"--to-index", strconv.FormatUint(f.toIndex, 10)}
		if f.toRevision != 0 {
			target = []string{"--to-revision", strconv.FormatInt(f.toRevision, 10)}
		}
		fmt.Fprintf(&b, "\n# On the host holding %s: rebuild the point in time once, then save it as a snapshot to copy to every host.\n", f.fromDataDir)
		args := []string{"etckit", "snapshot", "restore", "--from-data-dir", f.fromDataDir}
		if f.fromWALDir != "" {
			args = append(args, "--from-wal-dir", f.fromWALDir)
		}
		args = append(args, target...)
		if f.base != "" {
			args = append(args, "--base", f.base)
		}
		first := names[0]
		args = append(args, "--name", first, "--initial-cluster", f.o.InitialCluster, "--initial-cluster-token", f.o.InitialClusterToken,
			"--initial-advertise-peer-urls", strings.Join(urls[first], ","), "--data-dir", "pitr.tmp")
		fmt.Fprintln(&b, cmdline(args...))
		fmt.Fprintln(&b, cmdline("etckit", "snapshot", "save", src, "--data-dir", "pitr.tmp"))
	}
	for _, n := range names {
		peers := strings.Join(urls[n], ",")
		dataDir := n + ".etcd"
		if n == f.o.Name && f.dataDirGiven && f.o.DataDir != "" {
			dataDir = f.o.DataDir
		}
		client := clientURL(urls[n][0], f.clientPort)
		fmt.Fprintf(&b, "\n# member %s (id %x), peer URLs %s; client URL assumed %s (--plan-client-port)\n", n, ids[n], peers, client)
		args := []string{"etckit", "snapshot", "restore", src, "--name", n, "--initial-cluster", f.o.InitialCluster,
			"--initial-cluster-token", f.o.InitialClusterToken, "--initial-advertise-peer-urls", peers, "--data-dir", dataDir}
		if n == f.o.Name && f.o.WALDir != "" {
			args = append(args, "--wal-dir", f.o.WALDir)
		}
		if f.o.SkipHashCheck && f.fromDataDir == "" {
			args = append(args, "--skip-hash-check")
		}
		if f.o.BumpRevision > 0 {
			args = append(args, "--bump-revision", strconv.FormatUint(f.o.BumpRevision, 10), "--mark-compacted")
		}
		fmt.Fprintln(&b, cmdline(args...))
		start := []string{"etcd", "--name", n, "--data-dir", dataDir}
		if n == f.o.Name && f.o.WALDir != "" {
			start = append(start, "--wal-dir", f.o.WALDir)
		}
		start = append(start, "--initial-advertise-peer-urls", peers, "--listen-peer-urls", peers,
			"--advertise-client-urls", client, "--listen-client-urls", client,
			"--initial-cluster", f.o.InitialCluster, "--initial-cluster-token", f.o.InitialClusterToken, "--initial-cluster-state", "new")
		fmt.Fprintln(&b, cmdline(start...))
		if len(names) == 1 {
			serve := append([]string{"etckit", "serve"}, start[1:]...)
			fmt.Fprintf(&b, "# or, single member, with etckit itself:\n%s\n", cmdline(serve...))
		}
	}
	_, err = io.WriteString(w, b.String())
	return err
}
