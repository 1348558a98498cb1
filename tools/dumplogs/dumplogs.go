// Package dumplogs is `etckit dump-logs`: everything etcd-dump-logs does
// with an etcd member's write-ahead log, plus decoded requests rendered field
// by field, JSON output and a summary. It only reads: the WAL is scanned
// without locks (so it works next to a running member) and nothing in the
// data directory is ever opened for writing.
//
// # Modes
//
// Default: the entries after the newest .snap file (or after --start-snap,
// or from --start-index on, inclusive), up to --end-index (exclusive), with
// raft's overwrite rule applied (a re-written index replaces the earlier
// entry and everything after it), filtered by --entry-type with
// etcd-dump-logs' filter names. The log is streamed in two passes (one to
// find the header values and the surviving entries, one to print), so memory
// does not grow with the size of the log.
//
// --raw: every record of every segment (CRC, metadata, state, snapshot,
// entry) with its segment:offset, continuing past CRC errors, as
// `etcd-dump-logs --raw` but with locations.
//
// --summary: entries and bytes by request type and the most-written key
// prefixes, instead of the listing.
//
// # Output formats (-w)
//
// simple (alias etcd): etcd-dump-logs' layout: the Snapshot:/WAL metadata:
// header, one `%4d\t%10d\t<conf|norm>\t<data>` line per entry and the
// closing `Entry types (...) count is : N`. Conf changes print exactly as
// etcd does (`method=ConfChangeAddNode id=<hex>`), v2 requests too (`method=PUT
// path=".." val=".."`); InternalRaftRequests are rendered by etckit instead
// of protobuf's unstable text format:
//
//	<op> <field>=<value> ... req_id=<header ID, decimal>
//
//	put key="/small/kv/00" value="value-00" req_id=11547407549671118341
//	delete_range key="/a" range_end="/b" prev_kv req_id=...
//	txn compare=[target=MOD key="/k" result=EQUAL mod_revision=5] success=[put key="/k" value="v"] failure=[] req_id=...
//	lease_grant id=694d9a8d12a3e80b ttl=60 req_id=...
//	cluster_member_attr_set member_id=2e1259d415f2a040 name="default" client_urls=["http://127.0.0.1:2379"] req_id=...
//
// Keys and values are Go-quoted: printable UTF-8 stays readable, other
// bytes are escaped (\x00). Values longer than --max-value bytes are cut and
// followed by ...(<n> bytes); keys are never cut. Kubernetes protobuf values
// get their type appended (<k8s v1 Pod>). Member and lease IDs are hex, as
// etcdctl prints them; revisions and request IDs decimal. Passwords, password
// hashes and tokens print as <redacted>. A no-op entry has an empty data
// column, as in etcd-dump-logs.
//
// table: the header values and the entries as tables (held in memory until
// rendered; use simple or json for very large logs).
//
// json: one object per line. "kind" is one of snapshot, wal, entry, record
// (--raw), problem, summary, end. Entries carry term, index, type (conf|norm),
// category (the filter name), op and request (the fields above, with the same
// names; byte fields that are not UTF-8 are named <field>_base64 and hold
// base64). 64-bit IDs are JSON numbers: parse them as 64-bit integers.
//
// # Problems and exit codes
//
// Damage (a CRC mismatch, a torn tail, an undecodable record, a gap in the
// indexes, a .snap file that does not load) is reported with its file and
// byte offset, on stderr in text formats and as "problem" objects in JSON,
// and the dump goes on. The exit code is 0 when nothing was wrong, 1 when
// problems were reported, 2 for usage and I/O errors.
//
// # --stream-decoder
//
// As in etcd-dump-logs: the program is started once; for every printed entry
// its data is written to the program's stdin as one line of hex, and one line
// `<status>|<decoded>` is read back and appended to the entry's line (in JSON
// as decoder_status and decoded).
package dumplogs

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/etckit/etckit/corrupt"
	"github.com/etckit/etckit/snap"
	"github.com/etckit/etckit/tools/cli"
	"github.com/etckit/etckit/vfs"
	"github.com/etckit/etckit/wal"
	"github.com/spf13/cobra"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Etcd is the etcd-dump-logs layout, an alias of simple.
const Etcd cli.Format = "etcd"

// DefaultEntryTypes is etcd-dump-logs' default --entry-type.
const DefaultEntryTypes = "Normal,ConfigChange"

// Config holds the command's dependencies.
type Config struct {
	FS vfs.FS // default vfs.OS{}
}

// NewCommand returns `dump-logs` on the operating system's filesystem.
func NewCommand() *cobra.Command { return New(Config{}) }

type options struct {
	fs            vfs.FS
	dirs          cli.Dirs
	format        cli.FormatFlag
	startSnap     string
	startIndex    uint64
	endIndex      uint64
	entryType     string
	streamDecoder string
	raw           bool
	summary       bool
	maxValue      int
	top           int
	prefixDepth   int
}

// New returns `dump-logs` with the given dependencies.
func New(cfg Config) *cobra.Command {
	o := &options{fs: cfg.FS}
	if o.fs == nil {
		o.fs = vfs.OS{}
	}
	cmd := &cobra.Command{
		Use:   "dump-logs [data-dir]",
		Short: "Dump the raft entries (or, with --raw, every record) of an etcd member's WAL",
		Long: `Dump the raft log of an etcd member, as etcd-dump-logs does, with decoded
requests, JSON output and a summary. Read-only; safe next to a running member.
Exit status: 0 clean, 1 problems found (listed with file and byte offset), 2 usage or I/O error.`,
		Args:          cobra.MaximumNArgs(1),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE:          o.run,
	}
	o.dirs.AddFlags(cmd)
	cli.AddFormatFlag(cmd, &o.format, cli.Simple, cli.Simple, Etcd, cli.Table, cli.JSON)
	fl := cmd.Flags()
	fl.StringVar(&o.startSnap, "start-snap", "", "start after this .snap file (base name in member/snap) instead of the newest")
	fl.Uint64Var(&o.startIndex, "start-index", 0, "start at this raft index (inclusive) instead of the last snapshot")
	fl.Uint64Var(&o.endIndex, "end-index", math.MaxUint64, "stop before this raft index (exclusive)")
	fl.StringVar(&o.entryType, "entry-type", DefaultEntryTypes, "comma-separated entry types: "+strings.Join(filterNames, ", "))
	fl.StringVar(&o.streamDecoder, "stream-decoder", "", "program that decodes each entry's data, given as one hex line on stdin, answering one line status|decoded")
	fl.BoolVar(&o.raw, "raw", false, "list every record of every segment with segment:offset, continuing past CRC errors")
	fl.BoolVar(&o.summary, "summary", false, "print entries and bytes by request type and the most-written key prefixes instead of the entries")
	fl.IntVar(&o.maxValue, "max-value", 256, "in text output, cut values longer than this many bytes (0: never)")
	fl.IntVar(&o.top, "top", 10, "with --summary, how many key prefixes to list")
	fl.IntVar(&o.prefixDepth, "prefix-depth", 2, "with --summary, how many /-separated key segments make a prefix")
	return cmd
}

// problem is one piece of damage found while dumping.
type problem struct {
	Kind   string // "torn tail", "mid-log corruption", "gap", ...
	File   string
	Offset int64
	Detail string
}

func problemOf(err error) problem {
	if c := corrupt.As(err); c != nil {
		kind := "corruption"
		switch c.Kind {
		case corrupt.TornTail:
			kind = "torn tail"
		case corrupt.MidLog:
			kind = "mid-log corruption"
		}
		return problem{Kind: kind, File: c.Path, Offset: c.Offset, Detail: c.Reason}
	}
	return problem{Kind: "error", Offset: -1, Detail: err.Error()}
}

// run state shared by the modes.
type runState struct {
	o        *options
	cmd      *cobra.Command
	out      *bufio.Writer
	walDir   string
	problems int
	progress *cli.Progress
	segSizes map[string]int64
	segStart map[string]int64
}

func (o *options) run(cmd *cobra.Command, args []string) error {
	if err := o.dirs.FromArgs(args); err != nil {
		return err
	}
	walDir, err := o.dirs.Wal()
	if err != nil {
		return err
	}
	if o.startSnap != "" && cmd.Flags().Changed("start-index") {
		return cli.Usage("--start-snap and --start-index are mutually exclusive")
	}
	if o.raw && (o.startSnap != "" || cmd.Flags().Changed("entry-type") || o.summary || o.streamDecoder != "") {
		return cli.Usage("--start-snap, --entry-type, --summary and --stream-decoder do not apply to --raw")
	}
	if o.format.Value == Etcd {
		o.format.Value = cli.Simple
	}
	if o.maxValue < 0 || o.top < 0 || o.prefixDepth < 1 {
		return cli.Usage("--max-value and --top must be >= 0, --prefix-depth >= 1")
	}
	filters, err := parseFilters(o.entryType)
	if err != nil {
		return err
	}
	s := &runState{o: o, cmd: cmd, walDir: walDir}
	s.out = bufio.NewWriterSize(cmd.OutOrStdout(), 64<<10)
	defer s.out.Flush()
	if err := s.sizeSegments(); err != nil {
		return err
	}
	s.progress = cli.NewProgress(cmd.ErrOrStderr(), "dump-logs", s.total())
	defer s.progress.Done()
	if o.raw {
		err = s.dumpRaw()
	} else {
		err = s.dump(filters)
	}
	if ferr := s.out.Flush(); err == nil && ferr != nil {
		err = ferr
	}
	if err != nil {
		return err
	}
	if s.problems > 0 {
		return cli.Problems(s.problems, "problems")
	}
	return nil
}

// sizeSegments lists the segments for the progress bar (and checks that the
// WAL directory is readable, for a clear exit-2 error).
func (s *runState) sizeSegments() error {
	names, err := s.o.fs.ReadDirNames(s.walDir)
	if err != nil {
		return fmt.Errorf("dump-logs: %w", err)
	}
	s.segSizes, s.segStart = map[string]int64{}, map[string]int64{}
	var acc int64
	for _, n := range names {
		if _, _, err := wal.ParseSegmentName(n); err != nil {
			continue
		}
		fi, err := s.o.fs.Stat(filepath.Join(s.walDir, n))
		if err != nil {
			return fmt.Errorf("dump-logs: %w", err)
		}
		s.segStart[n] = acc
		s.segSizes[n] = fi.Size()
		acc += fi.Size()
	}
	if len(s.segSizes) == 0 {
		return fmt.Errorf("dump-logs: %w in %s", wal.ErrFileNotFound, s.walDir)
	}
	return nil
}

func (s *runState) total() int64 {
	var t int64
	for _, v := range s.segSizes {
		t += v
	}
	return t
}

func (s *runState) tick(pos wal.Position) { s.progress.Update(s.segStart[pos.Segment] + pos.Offset) }

// report prints a problem (stderr in text formats, a JSON line in json).
func (s *runState) report(p problem) {
	s.problems++
	if s.o.format.Value == cli.JSON {
		obj := (&cli.Object{}).Set("kind", "problem").Set("problem", p.Kind)
		obj.Set("file", p.File).Set("offset", p.Offset).Set("detail", p.Detail)
		_ = cli.JSONLine(s.out, obj)
		return
	}
	loc := p.File
	if p.Offset >= 0 {
		loc = fmt.Sprintf("%s:%d", p.File, p.Offset)
	}
	s.out.Flush()
	fmt.Fprintf(s.cmd.ErrOrStderr(), "etckit: problem: %s at %s: %s\n", p.Kind, loc, p.Detail)
}

func (s *runState) reportAt(kind string, pos wal.Position, detail string) {
	s.report(problem{Kind: kind, File: filepath.Join(s.walDir, pos.Segment), Offset: pos.Offset, Detail: detail})
}

// base is where the dump starts: entries with index > base.index are listed.
type base struct {
	index, term uint64
	fromIndex   bool // --start-index: a missing snapshot record is fine
	snapshot    *raftpb.Snapshot
	snapName    string
}

func (s *runState) findBase() (base, error) {
	o := s.o
	if s.cmd.Flags().Changed("start-index") {
		b := base{fromIndex: true}
		if o.startIndex > 0 {
			b.index = o.startIndex - 1
		}
		return b, nil
	}
	snapDir := o.dirs.Snap()
	if o.startSnap != "" {
		if snapDir == "" {
			return base{}, cli.Usage("--start-snap needs --data-dir")
		}
		p := filepath.Join(snapDir, o.startSnap)
		sn, err := snap.Read(o.fs, p)
		if err != nil {
			if corrupt.As(err) == nil {
				return base{}, fmt.Errorf("dump-logs: %w", err)
			}
			return base{}, &cli.ExitError{Code: cli.ExitProblems, Err: fmt.Errorf("dump-logs: cannot start at %s: %w", p, err)}
		}
		return base{index: sn.GetMetadata().GetIndex(), term: sn.GetMetadata().GetTerm(), snapshot: sn, snapName: p}, nil
	}
	if snapDir == "" {
		return base{}, nil
	}
	if _, err := o.fs.Stat(snapDir); err != nil {
		return base{}, nil // no snap directory: no snapshot, as etcd
	}
	sn, pt, skipped, err := snap.LoadNewestMatching(o.fs, snapDir, nil)
	for _, e := range skipped {
		p := problemOf(e)
		if p.File == "" {
			p.File = snapDir
		}
		p.Kind = "broken snapshot file"
		s.report(p)
	}
	if errors.Is(err, snap.ErrNoSnapshot) {
		return base{}, nil
	}
	if err != nil {
		return base{}, fmt.Errorf("dump-logs: %w", err)
	}
	return base{index: pt.Index, term: pt.Term, snapshot: sn, snapName: filepath.Join(snapDir, pt.FileName())}, nil
}

// index is what the first pass learns.
type index struct {
	metadata []byte
	state    *raftpb.HardState
	matched  bool
	// winners[p] is the ordinal (among entry records, in scan order) of the
	// record that holds index base+1+p after raft's overwrite rule.
	winners []int
	gap     bool
}

func (s *runState) firstPass(b base) (*index, error) {
	ix := &index{}
	sc, err := wal.NewScanner(s.walDir, wal.ScanOptions{FS: s.o.fs, FromIndex: b.index, ContinueOnCRCError: true})
	if err != nil {
		return nil, fmt.Errorf("dump-logs: %w", err)
	}
	defer sc.Close()
	ord := -1
	lost := false // the last entry record could not be decoded
	var re wal.EntryFields
	for sc.Next() {
		pos, rec := sc.Position(), sc.Record()
		s.tick(pos)
		if err := sc.RecordErr(); err != nil {
			s.report(problemOf(err))
		}
		switch rec.Type {
		case wal.MetadataType:
			if ix.metadata == nil {
				ix.metadata = append([]byte{}, rec.Data...)
			} else if string(ix.metadata) != string(rec.Data) {
				s.reportAt("metadata conflict", pos, "metadata differs from the first metadata record")
			}
		case wal.StateType:
			st, err := wal.UnmarshalHardState(rec.Data)
			if err != nil {
				s.reportAt("undecodable record", pos, "HardState: "+err.Error())
				continue
			}
			ix.state = st
		case wal.SnapshotType:
			sn, err := wal.UnmarshalSnapshot(rec.Data)
			if err != nil {
				s.reportAt("undecodable record", pos, "snapshot: "+err.Error())
				continue
			}
			if sn.Index == b.index {
				if sn.Term != b.term && !b.fromIndex {
					s.reportAt("snapshot mismatch", pos, fmt.Sprintf("snapshot record index %d has term %d, the snapshot term %d", sn.Index, sn.Term, b.term))
				}
				ix.matched = true
			}
		case wal.EntryType:
			ord++
			if err := wal.DecodeEntryFields(rec.Data, &re); err != nil {
				s.reportAt("undecodable record", pos, "entry: "+err.Error())
				lost = true
				continue
			}
			i := re.Index // 0 when absent, as raftpb.Entry.GetIndex
			if i <= b.index || ix.gap {
				lost = false
				continue
			}
			p := int(i - b.index - 1)
			if lost && p == len(ix.winners)+1 {
				// The undecodable record held the missing index (already
				// reported): keep a hole and go on.
				ix.winners = append(ix.winners, -1)
			}
			lost = false
			if p > len(ix.winners) {
				ix.gap = true
				s.reportAt("gap", pos, fmt.Sprintf("entry %d follows entry %d (%v); later entries are not listed", i, b.index+uint64(len(ix.winners)), wal.ErrSliceOutOfRange))
				continue
			}
			ix.winners = append(ix.winners[:p], ord)
		case wal.CRCType:
		default:
			s.reportAt("unknown record type", pos, fmt.Sprintf("record type %d", rec.Type))
		}
	}
	if err := sc.Err(); err != nil {
		if corrupt.As(err) == nil {
			return nil, fmt.Errorf("dump-logs: %w", err)
		}
		s.report(problemOf(err))
	}
	if !ix.matched && !b.fromIndex {
		s.report(problem{Kind: "snapshot not found", File: s.walDir, Offset: -1,
			Detail: fmt.Sprintf("no WAL snapshot record matches the snapshot at index %d term %d (%v)", b.index, b.term, wal.ErrSnapshotNotFound)})
	}
	if ix.state == nil {
		ix.state = &raftpb.HardState{}
	}
	return ix, nil
}

func (o *options) inRange(i uint64) bool { return i < o.endIndex }

func (s *runState) dump(filters []filter) error {
	b, err := s.findBase()
	if err != nil {
		return err
	}
	ix, err := s.firstPass(b)
	if err != nil {
		return err
	}
	var count int
	var last uint64
	for p, w := range ix.winners {
		if i := b.index + 1 + uint64(p); w >= 0 && s.o.inRange(i) {
			count++
			last = i
		}
	}
	pr := newPrinter(s, filters)
	if err := pr.header(b, ix, count, last); err != nil {
		return err
	}
	if s.o.streamDecoder != "" {
		if err := pr.startDecoder(); err != nil {
			return err
		}
		defer pr.stopDecoder()
	}
	sc, err := wal.NewScanner(s.walDir, wal.ScanOptions{FS: s.o.fs, FromIndex: b.index, ContinueOnCRCError: true})
	if err != nil {
		return fmt.Errorf("dump-logs: %w", err)
	}
	defer sc.Close()
	ord := -1
	var re wal.EntryFields
	var e raftpb.Entry
	for sc.Next() {
		if sc.Record().Type != wal.EntryType {
			continue
		}
		ord++
		s.tick(sc.Position())
		if err := wal.DecodeEntryFields(sc.Record().Data, &re); err != nil {
			continue // reported by the first pass
		}
		i := re.Index
		if i <= b.index {
			continue
		}
		if p := int(i - b.index - 1); p >= len(ix.winners) || ix.winners[p] != ord || !s.o.inRange(i) {
			continue
		}
		// e.Data aliases the record: pr.entry keeps none of it.
		if err := pr.entry(entryOf(&re, &e)); err != nil {
			return err
		}
	}
	// The first pass reported damage; a read error now is an I/O error.
	if err := sc.Err(); err != nil && corrupt.As(err) == nil {
		return fmt.Errorf("dump-logs: %w", err)
	}
	return pr.footer()
}

// metadataIDs decodes etcdserverpb.Metadata.
func metadataIDs(b []byte) (node, cluster uint64, err error) {
	var m pb.Metadata
	if err := proto.Unmarshal(b, &m); err != nil {
		return 0, 0, err
	}
	return m.GetNodeID(), m.GetClusterID(), nil
}

// decoderProc is a running --stream-decoder.
type decoderProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

func (s *runState) startDecoder() (*decoderProc, error) {
	args := strings.Fields(s.o.streamDecoder)
	if len(args) == 0 {
		return nil, cli.Usage("dump-logs: --stream-decoder is empty")
	}
	c := exec.CommandContext(s.cmd.Context(), args[0], args[1:]...)
	c.Stderr = s.cmd.ErrOrStderr()
	in, err := c.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("dump-logs: stream decoder: %w", err)
	}
	out, err := c.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("dump-logs: stream decoder: %w", err)
	}
	if err := c.Start(); err != nil {
		return nil, cli.Usage("dump-logs: cannot start --stream-decoder %q: %v", s.o.streamDecoder, err)
	}
	return &decoderProc{cmd: c, stdin: in, out: bufio.NewReader(out)}, nil
}

// decode sends one entry's data and reads the decoder's answer, split as
// etcd-dump-logs splits it.
func (d *decoderProc) decode(data []byte) (status, decoded string, err error) {
	if _, err := io.WriteString(d.stdin, hex.EncodeToString(data)+"\n"); err != nil {
		return "", "", err
	}
	line, err := d.out.ReadString('\n')
	if err != nil {
		return "", "", err
	}
	line = strings.TrimSuffix(line, "\n")
	parts := strings.Split(line, "|")
	switch len(parts) {
	case 1:
		return "decoder output format is not right, print output anyway", line, nil
	case 2:
		return parts[0], parts[1], nil
	default:
		return parts[0] + "(*WARNING: data might contain deliminator used by decoder*)", strings.Join(parts[1:], ""), nil
	}
}

func (d *decoderProc) stop() error {
	d.stdin.Close()
	return d.cmd.Wait()
}
